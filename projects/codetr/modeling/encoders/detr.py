"""The standard DETR transformer encoder on one feature level (Conditional DETR, DAB-DETR, DN-DETR).

Each layer is post-norm: ``x = norm1(x + drop(self_attn(q=x+p, k=x+p, v=x)))`` then
``x = norm2(x + drop(linear2(drop(act(linear1(x))))))``, with the padding mask on the keys.
``p`` is the sine embedding of the map positions (``PositionEmbeddingSine``), added to the
queries and keys of every layer. DAB-DETR's variant (``pos_scale=True``) rescales it before every
layer by an MLP of the layer input, ``p' = p * query_scale(x)`` (one MLP shared by all layers,
the official key ``transformer.encoder.query_scale``), and uses PReLU activations.

Attribute names follow the official releases (``layers.i.self_attn.in_proj_weight``,
``linear1``, ``linear2``, ``norm1``, ``norm2``, ``activation``) so that converters only rename
prefixes.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from torch import Tensor, nn

from codetr.layers.mlp import MLP
from codetr.layers.transformer_blocks import xavier_uniform_matrices

from .output import EncoderOutput

__all__ = ["DETREncoder", "DETREncoderLayer", "make_activation"]


def make_activation(name: str) -> nn.Module:
    """'relu' (DETR, Conditional DETR) or 'prelu' (DAB-DETR, DN-DETR: one learned slope, init 0.25)."""
    if name == "relu":
        return nn.ReLU()
    if name == "prelu":
        return nn.PReLU()
    raise ValueError(f"activation must be 'relu' or 'prelu', got {name!r}")


class DETREncoderLayer(nn.Module):
    """One post-norm encoder layer (see the module docstring); tensors are batch-first."""

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, src: Tensor, pos: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """src, pos: (N, S, C); padding_mask (N, S) bool, True at padding (never attended to).
        Returns (N, S, C)."""
        q = src + pos
        attn = self.self_attn(q, q, src, key_padding_mask=padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class DETREncoder(nn.Module):
    """``num_layers`` post-norm ``DETREncoderLayer``s over one flattened feature level.

    Args:
        num_layers: 6 in every paper of the family.
        embed_dim, num_heads, ffn_dim, dropout, activation: layer settings (Conditional DETR:
            256, 8, 2048, 0.1, 'relu'; DAB-DETR / DN-DETR: 256, 8, 2048, 0.0, 'prelu').
        pos_scale: DAB-DETR's per-layer scaling of the positional embedding by
            ``query_scale(x)`` (MLP C -> C -> C, shared by the layers).
    """

    def __init__(
        self,
        num_layers: int = 6,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        pos_scale: bool = False,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DETREncoder: num_layers must be >= 1, got {num_layers}")
        self.layers = nn.ModuleList(
            DETREncoderLayer(embed_dim, num_heads, ffn_dim, dropout, activation) for _ in range(num_layers)
        )
        self.query_scale = MLP(embed_dim, embed_dim, embed_dim, 2) if pos_scale else None
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation (DETR / Conditional DETR / DAB-DETR ``Transformer._reset_parameters``
        covers the encoder): xavier-uniform on every matrix of the layers and of ``query_scale``;
        the attention output biases stay 0."""
        xavier_uniform_matrices(self.layers, self.query_scale)

    def forward(self, src: Tensor, pos: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """src, pos: (N, S, C); padding_mask (N, S) bool, True at padding. Returns memory (N, S, C)."""
        for layer in self.layers:
            layer_pos = pos if self.query_scale is None else pos * self.query_scale(src)
            src = layer(src, layer_pos, padding_mask)
        return src

    def encode(self, features: List[Tensor], masks: List[Tensor], pos_embeds: List[Tensor]) -> EncoderOutput:
        """Encode one feature level (the interface of ``DeformableTransformer.encode``).

        Args:
            features: one map (N, C, H, W) (C5 at stride 32, or DC5 at stride 16), already
                projected to ``embed_dim`` channels.
            masks: one (N, H, W) bool, True at padding.
            pos_embeds: one (N, C, H, W) sine position embedding of the map.
        Returns:
            ``EncoderOutput`` with L = 1; ``memory_pos`` is the (unscaled) position embedding,
            which the decoders' cross-attention adds to its keys.
        """
        if len(features) != 1 or len(masks) != 1 or len(pos_embeds) != 1:
            raise ValueError(
                f"DETREncoder encodes one feature level; got {len(features)} features, {len(masks)} masks, "
                f"{len(pos_embeds)} position embeddings"
            )
        if features[0].shape[1] != self.embed_dim:
            raise ValueError(f"DETREncoder: features have {features[0].shape[1]} channels, expected {self.embed_dim}")
        levels = EncoderOutput.from_levels(features, masks, pos_embeds)
        return dataclasses.replace(levels, memory=self(levels.memory, levels.memory_pos, levels.memory_mask))
