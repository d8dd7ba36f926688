"""The deformable decoder: self-attention over all query groups (with a group mask), deformable
cross-attention around each query's reference box, FFN; serves DINO, DN-Deformable-DETR and
Deformable-DETR++ (Co-Deformable-DETR), built on the ``QueryDecoder`` driver.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from codetr.layers import MSDeformAttn
from codetr.layers.mlp import MLP
from codetr.layers.transformer_blocks import FFN, clones
from codetr.modeling.coders import BoxCoder
from codetr.modeling.encoders.output import EncoderOutput
from codetr.modeling.queries.positions import BoxSineQueryPosition

from .driver import QueryDecoder

__all__ = ["DeformableDecoderLayer", "DeformableDecoder", "init_heads"]


class DeformableDecoderLayer(nn.Module):
    """self-attn -> add & norm -> deformable cross-attn -> add & norm -> FFN -> add & norm.

    The ``QueryDecoder`` layer interface: ``forward(content, query_pos, reference, enc,
    attn_mask)`` with reference (N, Q, 4) normalised cxcywh boxes (or (N, Q, 2) points) of the
    unpadded image; the layer maps them into each level's padded frame (``enc.valid_ratios``)."""

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn = MSDeformAttn(embed_dim, num_heads, num_levels, num_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = FFN(embed_dim, ffn_dim, dropout)
        self.norm3 = nn.LayerNorm(embed_dim)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference: Tensor, enc: EncoderOutput, attn_mask=None):
        """tgt, query_pos: (N, Q, C); reference (N, Q, R); attn_mask None or bool (Q, Q) /
        (N * heads, Q, Q), True = may not attend."""
        ratios = enc.valid_ratios if reference.shape[-1] == 2 else torch.cat([enc.valid_ratios] * 2, -1)
        ref = reference[:, :, None] * ratios[:, None]  # (N, Q, L, R) in each level's padded frame
        q = tgt + query_pos
        attn = self.self_attn(q, q, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.cross_attn(tgt + query_pos, ref, enc.memory, enc.spatial_shapes, enc.level_start_index,
                               enc.memory_mask)
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.norm3(self.ffn(tgt))


class DeformableDecoder(QueryDecoder):
    """``num_layers`` deformable decoder layers on 4-d reference boxes with per-layer (unshared)
    class and box heads and layer-by-layer box refinement (``QueryDecoder`` with these parts).

    Args:
        num_layers: decoder layers.
        embed_dim, num_heads, num_levels, num_points, ffn_dim, dropout: layer settings.
        num_classes: K, the class heads' outputs (sigmoid focal classification).
        look_forward_twice: True (DINO) or False (Deformable DETR's refinement); see
            ``QueryDecoder``.
        ref_point_head: True (DINO): a ``BoxSineQueryPosition`` (MLP 2C -> C -> C of the sine
            embedding of the current box) gives the positions of groups without their own;
            False (Deformable-DETR++): every group brings its positions.
        post_norm: a final LayerNorm (``norm``, shared by the layers) on every layer's output
            before the heads (DINO); False: the heads read the raw outputs (Deformable-DETR++).
    """

    def __init__(
        self,
        num_layers: int = 6,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        num_classes: int = 80,
        look_forward_twice: bool = True,
        ref_point_head: bool = True,
        post_norm: bool = True,
    ):
        # (created in this order so that a seeded default initialisation stays as it was)
        layers = clones(DeformableDecoderLayer(embed_dim, num_heads, num_levels, num_points, ffn_dim, dropout),
                        num_layers)
        position = BoxSineQueryPosition(embed_dim, 4) if ref_point_head else None
        norm = nn.LayerNorm(embed_dim) if post_norm else None
        class_embed = clones(nn.Linear(embed_dim, num_classes), num_layers)
        bbox_embed = clones(MLP(embed_dim, embed_dim, 4, 3), num_layers)
        super().__init__(
            layers,
            class_embed,
            bbox_embed,
            box_coder=BoxCoder(),
            ref_point_head=position,
            norm=norm,
            refine=True,
            look_forward_twice=look_forward_twice,
        )
        self.embed_dim = embed_dim
        init_heads(self.class_embed, self.bbox_embed)


def init_heads(class_embeds, bbox_embeds, prior_prob: float = 0.01) -> None:
    """Focal-loss prior on the class biases; zero last box layer (the first prediction is the
    reference box itself)."""
    bias = -math.log((1 - prior_prob) / prior_prob)
    for cls in class_embeds:
        nn.init.constant_(cls.bias, bias)
    for box in bbox_embeds:
        nn.init.zeros_(box.layers[-1].weight)
        nn.init.zeros_(box.layers[-1].bias)
