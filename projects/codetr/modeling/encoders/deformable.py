"""Deformable DETR encoder (post-norm), as used by DINO and Deformable-DETR++."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from codetr.layers import MSDeformAttn

from codetr.layers.transformer_blocks import FFN, clones

__all__ = ["DeformableEncoderLayer", "DeformableEncoder", "get_encoder_reference_points"]


def get_encoder_reference_points(shapes: List[Tuple[int, int]], valid_ratios: Tensor) -> Tensor:
    """Pixel centres of every level, normalised by the valid (unpadded) extent of that level,
    then expressed in every level's padded frame.

    Args:
        shapes: L (H_l, W_l) sizes.
        valid_ratios: (N, L, 2) (w, h) valid fractions.

    Returns:
        (N, S, L, 2) normalised (x, y) sampling reference points.
    """
    points = []
    for lvl, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=valid_ratios.device) + 0.5,
            indexing="ij",
        )
        x = xs.reshape(1, -1) / (valid_ratios[:, None, lvl, 0] * w)
        y = ys.reshape(1, -1) / (valid_ratios[:, None, lvl, 1] * h)
        points.append(torch.stack([x, y], -1))
    points = torch.cat(points, 1)  # (N, S, 2), normalised by each image's valid size
    return points[:, :, None] * valid_ratios[:, None]


class DeformableEncoderLayer(nn.Module):
    """self deformable attention -> add & norm -> FFN -> add & norm."""

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
        self.self_attn = MSDeformAttn(embed_dim, num_heads, num_levels, num_points)
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.ffn = FFN(embed_dim, ffn_dim, dropout)
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout(attn))
        return self.norm2(self.ffn(src))


class DeformableEncoder(nn.Module):
    """``num_layers`` identical (unshared) ``DeformableEncoderLayer``s."""

    def __init__(self, num_layers: int = 6, **layer_kwargs):
        super().__init__()
        self.layers = clones(DeformableEncoderLayer(**layer_kwargs), num_layers)
        self.num_layers = num_layers

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        shapes: List[Tuple[int, int]],
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
        padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """src, pos: (N, S, C); padding_mask (N, S) True at padding. Returns memory (N, S, C)."""
        reference_points = get_encoder_reference_points(shapes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src
