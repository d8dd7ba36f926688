"""Small tensor helpers shared by the deformable encoder and the DINO decoder."""
from __future__ import annotations

import copy
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from codetr.layers.box_ops import inverse_sigmoid  # noqa: F401  (re-exported)

__all__ = ["inverse_sigmoid", "get_valid_ratios", "flatten_levels", "FFN", "clones"]


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    """n independent deep copies of module."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def get_valid_ratios(masks: Sequence[Tensor]) -> Tensor:
    """Per level, the fraction of the map covered by the image.

    masks: L tensors (N, H_l, W_l) bool, True at padding. Returns (N, L, 2) as (w, h) ratios.
    """
    ratios = []
    for m in masks:
        valid_h = (~m[:, :, 0]).sum(1).float() / m.shape[1]
        valid_w = (~m[:, 0, :]).sum(1).float() / m.shape[2]
        ratios.append(torch.stack([valid_w, valid_h], -1))
    return torch.stack(ratios, 1)


def flatten_levels(maps: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor, List[Tuple[int, int]]]:
    """Flatten L maps (N, C, H_l, W_l) (or masks (N, H_l, W_l)) into (N, S, C) (or (N, S)).

    Returns (flat, spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64, shapes list).
    """
    shapes = [tuple(m.shape[-2:]) for m in maps]
    if maps[0].dim() == 4:
        flat = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
    else:
        flat = torch.cat([m.flatten(1) for m in maps], 1)
    device = maps[0].device
    # torch.tensor, not torch.as_tensor: under torch.export with dynamic sizes, as_tensor bakes the
    # example's sizes into a constant while torch.tensor traces them from the maps' shapes.
    spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return flat, spatial_shapes, level_start_index, shapes


class FFN(nn.Module):
    """Linear-ReLU-Dropout-Linear-Dropout with a residual connection (no norm)."""

    def __init__(self, embed_dim: int = 256, ffn_dim: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout2(self.linear2(self.dropout1(self.linear1(x).relu())))
