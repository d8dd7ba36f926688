"""The DETR decoder (Carion et al. 2020, facebookresearch/detr ``models/transformer.py``).

A layer (``DETRDecoderLayer``), post-norm, standard multi-head attention with the positions
added to queries and keys (never to values):

1. self-attention ``q = k = x + P``, ``v = x``; add, ``norm1``;
2. cross-attention on the memory ``m`` with positions ``p_m``: ``q = x + P``, ``k = m + p_m``,
   ``v = m``, padded memory positions masked; add, ``norm2``;
3. FFN ``linear2(drop(relu(linear1(x))))``; add, ``norm3``.

``P`` is the learned query embedding (``LearnedPositionQueries``), the same at every layer; the
content starts at zero. There is no reference: the shared heads read ``norm(x)`` (one LayerNorm
shared by the layers, also for the auxiliary outputs) and predict the class logits over K + 1
classes ("no object" last) and the box ``sigmoid(MLP(norm(x)))`` directly (``DirectBoxCoder``).

Attribute names follow the official release (``self_attn``, ``multihead_attn`` as
``nn.MultiheadAttention`` with ``in_proj_weight``, ``linear1``, ``linear2``, ``norm1..3``), so
the converter only renames prefixes.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from codetr.layers.mlp import MLP
from codetr.layers.transformer_blocks import xavier_uniform_matrices
from codetr.modeling.coders import DirectBoxCoder
from codetr.modeling.encoders.detr import make_activation
from codetr.modeling.encoders.output import EncoderOutput

from .driver import QueryDecoder

__all__ = ["DETRDecoder", "DETRDecoderLayer"]


class DETRDecoderLayer(nn.Module):
    """One post-norm DETR decoder layer (see the module docstring); tensors are batch-first.

    Args:
        embed_dim, num_heads, ffn_dim, dropout, activation: 256, 8, 2048, 0.1, 'relu' (DETR).

    The ``QueryDecoder`` interface ``forward(content, query_pos, reference, enc, attn_mask)``
    ignores ``reference`` (DETR has none); ``attend`` is the layer with the memory given
    explicitly.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        self.num_heads = num_heads
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.activation = make_activation(activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(embed_dim) for _ in range(3))
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(4))

    def forward(
        self, content: Tensor, query_pos: Tensor, reference: Tensor, enc: EncoderOutput, attn_mask=None
    ) -> Tensor:
        """content, query_pos (N, Q, C); reference unused ((N, Q, 0)); attn_mask None or bool
        (Q, Q) / (N * heads, Q, Q), True = blocked. Returns (N, Q, C)."""
        return self.attend(content, query_pos, enc.memory, enc.memory_pos, enc.memory_mask, attn_mask)

    def attend(
        self,
        content: Tensor,
        query_pos: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """The layer with everything explicit.

        Args:
            content, query_pos: (N, Q, C) the layer input and the positional query P.
            memory, memory_pos: (N, S, C) encoder memory and its positional embedding.
            memory_mask: (N, S) bool, True at padding.
            attn_mask: self-attention mask, None or (Q, Q) / (N * heads, Q, Q) bool, True = blocked.
        """
        q = content + query_pos
        attn = self.self_attn(q, q, content, attn_mask=attn_mask, need_weights=False)[0]
        x = self.norm1(content + self.dropout1(attn))
        attn = self.multihead_attn(x + query_pos, memory + memory_pos, memory, key_padding_mask=memory_mask,
                                   need_weights=False)[0]
        x = self.norm2(x + self.dropout2(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.norm3(x + self.dropout3(ffn))


class DETRDecoder(QueryDecoder):
    """``num_layers`` DETR decoder layers with one shared class head ``Linear(C, K + 1)``, one
    shared box head ``MLP(C, C, 4, 3)`` and one shared final LayerNorm; no reference, no
    refinement (``QueryDecoder`` with ``DirectBoxCoder``, ``refine=False``).

    Args:
        num_layers, embed_dim, num_heads, ffn_dim, dropout, activation: layer settings (DETR: 6,
            256, 8, 2048, 0.1, 'relu').
        num_classes: K; the class head has K + 1 outputs, the last one "no object" (softmax).

    Initialisation as the official release: xavier-uniform on every matrix of the layers (the
    attention biases stay 0), the heads at PyTorch's defaults (no focal prior: DETR's loss is a
    softmax).
    """

    def __init__(
        self,
        num_layers: int = 6,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        num_classes: int = 80,
    ):
        if num_layers < 1:
            raise ValueError(f"DETRDecoder: num_layers must be >= 1, got {num_layers}")
        layers = [DETRDecoderLayer(embed_dim, num_heads, ffn_dim, dropout, activation) for _ in range(num_layers)]
        super().__init__(
            layers,
            nn.Linear(embed_dim, num_classes + 1),
            MLP(embed_dim, embed_dim, 4, 3),
            box_coder=DirectBoxCoder(),
            ref_point_head=None,
            norm=nn.LayerNorm(embed_dim),
            refine=False,
        )
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        xavier_uniform_matrices(self.layers)
