"""Two-stage query selection (Deformable DETR, DINO): one proposal per encoder position."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

__all__ = ["gen_encoder_output_proposals"]


def gen_encoder_output_proposals(
    memory: Tensor, memory_mask: Tensor, shapes: List[Tuple[int, int]]
) -> Tuple[Tensor, Tensor, Tensor]:
    """One proposal per encoder position: centre at the pixel centre (normalised by the level's
    valid extent), width = height = 0.05 * 2^level.

    Args:
        memory: (N, S, C); memory_mask: (N, S) bool, True at padding; shapes: L (H_l, W_l).

    Returns:
        output_memory (N, S, C): memory zeroed at invalid positions;
        proposals (N, S, 4): logit of normalised cxcywh, +inf at invalid positions;
        valid (N, S) bool: not padded and all proposal coordinates in (0.01, 0.99).
    """
    n = memory.shape[0]
    proposals, start = [], 0
    for lvl, (h, w) in enumerate(shapes):
        mask = memory_mask[:, start : start + h * w].view(n, h, w)
        valid_h = (~mask[:, :, 0]).sum(1).float()
        valid_w = (~mask[:, 0, :]).sum(1).float()
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=memory.device),
            torch.arange(w, dtype=torch.float32, device=memory.device),
            indexing="ij",
        )
        grid = torch.stack([xs, ys], -1).view(1, h * w, 2) + 0.5
        centres = grid / torch.stack([valid_w, valid_h], -1).view(n, 1, 2)
        wh = torch.full_like(centres, 0.05 * 2.0**lvl)
        proposals.append(torch.cat([centres, wh], -1))
        start += h * w
    proposals = torch.cat(proposals, 1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1) & ~memory_mask
    proposals = torch.log(proposals / (1 - proposals)).masked_fill(~valid[..., None], float("inf"))
    output_memory = memory.masked_fill(~valid[..., None], 0.0)
    return output_memory, proposals, valid
