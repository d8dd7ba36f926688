"""Co-DETR's multi-scale adapter for single-scale encoders (Co-DETR paper section 3.2,
supplement B): a feature pyramid for the auxiliary heads built from the one encoder map.

From the map at stride ``s`` (C5: 32, DC5: 16), every coarser level is a 3x3 stride-2 convolution
+ GroupNorm of the previous one (as the multi-scale Co-DETR's extra level), every finer level a
3x3 convolution + GroupNorm of the bilinear 2x upsampling of the next coarser one ("bilinear
interpolation and 3x3 convolution for upsampling"; whether the official code upsamples
successively and normalises is not published: successive + GN, like the downsampling path, is
this project's choice). The level at stride ``s`` is the map itself.

Padding: positions outside the image are zeroed before every convolution and the GroupNorm
statistics are taken over valid positions only (``ChannelMapper``'s ``ConvGN``); downsampled
levels of an image therefore do not depend on the batch padding (for even valid extents), while
upsampled levels are bilinear across the image border (the adapter is training-only: inference
never reads it).
"""
from __future__ import annotations

from typing import List, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .channel_mapper import ConvGN, padding_mask_at_stride

__all__ = ["SingleScalePyramidAdapter"]


class SingleScalePyramidAdapter(nn.Module):
    """Args:
        channels: C of the encoder map and of every level.
        in_stride: stride of the encoder map (32 for C5, 16 for DC5).
        strides: the pyramid's strides, increasing powers of two that include ``in_stride``
            (the paper: 8, 16, 32, 64, 128).
        num_groups: GroupNorm groups.

    forward(levels: [one map (N, C, H, W)], masks: [one (N, H, W) bool, True at padding])
    -> one map (N, C, H_l, W_l) per stride, finest first.
    """

    def __init__(self, channels: int = 256, in_stride: int = 32, strides: Sequence[int] = (8, 16, 32, 64, 128),
                 num_groups: int = 32):
        super().__init__()
        strides = [int(s) for s in strides]
        if in_stride not in strides:
            raise ValueError(f"SingleScalePyramidAdapter: in_stride={in_stride} is not one of strides={strides}")
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"SingleScalePyramidAdapter: strides={strides}; expected successive powers of two")
        self.strides = strides
        self.in_index = strides.index(in_stride)
        num_up, num_down = self.in_index, len(strides) - 1 - self.in_index
        # up_convs[k] makes the level k + 1 steps finer than the input; down_convs[k] k + 1 coarser
        self.up_convs = nn.ModuleList(ConvGN(channels, channels, 3, 1, num_groups) for _ in range(num_up))
        self.down_convs = nn.ModuleList(ConvGN(channels, channels, 3, 2, num_groups) for _ in range(num_down))

    def forward(self, levels: List[Tensor], masks: List[Tensor]) -> List[Tensor]:
        if len(levels) != 1 or len(masks) != 1:
            raise ValueError(f"SingleScalePyramidAdapter: expected one encoder level and mask, got {len(levels)} / "
                             f"{len(masks)}")
        x, mask = levels[0], (masks[0] if bool(masks[0].any()) else None)
        coarser, y, m = [], x, mask
        for conv in self.down_convs:  # ConvGN zeroes y's padding and normalises over valid outputs
            y = conv(y, m)
            m = None if m is None else padding_mask_at_stride(m, 2, y.shape[-2:])
            coarser.append(y)
        finer, y, m = [], x, mask
        for conv in self.up_convs:
            if m is not None:
                y = y.masked_fill(m[:, None], 0.0)
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            m = None if m is None else m.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (N, 2H, 2W)
            y = conv(y, m)
            finer.append(y)
        return finer[::-1] + [x] + coarser
