"""ChannelMapper neck (mmdet / detrex): maps backbone levels to one width, adds extra levels.

Padding-aware: GroupNorm statistics are taken over valid (unpadded) positions only, and padded
positions are zeroed before the extra stride-2 convolutions, so an image's features do not
depend on how much it was padded in a batch.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from torch import Tensor, nn

__all__ = ["ChannelMapper", "downsample_mask", "masked_group_norm"]


def downsample_mask(mask: Tensor, size) -> Tensor:
    """(N, H, W) bool pixel padding mask -> (N, h, w) bool (nearest), True at padding."""
    return F.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")[:, 0].bool()


def masked_group_norm(x: Tensor, norm: nn.GroupNorm, mask: Optional[Tensor] = None) -> Tensor:
    """GroupNorm of x (N, C, H, W) whose statistics ignore positions where mask (N, H, W) is True.

    Without a mask this is ``norm(x)``. Statistics are computed in fp32.
    """
    if mask is None:
        return norm(x)
    n, c, h, w = x.shape
    g = norm.num_groups
    xg = x.float().view(n, g, c // g, h, w)
    valid = (~mask).float().view(n, 1, 1, h, w)
    count = (valid.sum((2, 3, 4), keepdim=True) * (c // g)).clamp(min=1.0)
    mean = (xg * valid).sum((2, 3, 4), keepdim=True) / count
    var = ((xg - mean) ** 2 * valid).sum((2, 3, 4), keepdim=True) / count
    out = ((xg - mean) * torch.rsqrt(var + norm.eps)).view(n, c, h, w)
    if norm.affine:
        out = out * norm.weight.float().view(1, c, 1, 1) + norm.bias.float().view(1, c, 1, 1)
    return out.to(x.dtype)


class ConvGN(nn.Module):
    """Conv2d followed by GroupNorm (no activation).

    On the CPU under bfloat16 autocast the convolution runs in float32: torch 2.14's CPU bf16
    3x3 stride-2 convolution returns NaN or wrong weight gradients when a spatial side of its
    input is 1 (e.g. (2, 128, 3, 1) or (1, 128, 1, 1): 29-30 of 30 calls NaN or off by > 5%;
    stride 1 and sides >= 2 were fine), as the extra pyramid levels of small images are; see
    ``tests/modeling/necks/test_channel_mapper.py``. The GroupNorm statistics are fp32 anyway.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, num_groups: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2)
        self.norm = nn.GroupNorm(num_groups, out_channels)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x (N, C_in, H, W), mask (N, H', W') bool or None (True at padding) ->
        (N, C_out, h, w) (float32 on the CPU under autocast)."""
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                x = self.conv(x.float())
        else:
            x = self.conv(x)
        if mask is not None:
            mask = downsample_mask(mask, x.shape[-2:])
        return masked_group_norm(x, self.norm, mask)


class ChannelMapper(nn.Module):
    """Per-level ``kernel_size`` conv + GN to ``out_channels``; ``num_outs - len(in_features)``
    extra levels by 3x3 stride-2 conv + GN, the first on the last *input* feature (raw C5, as in
    mmdet/detrex), the next ones on the previous output.

    Args:
        input_shapes: backbone ShapeSpecs by name (channels and stride are used).
        in_features: names of the backbone outputs to map, finest first (e.g. res3, res4, res5).
        out_channels: output width.
        num_outs: number of output levels (defaults to ``len(in_features)``).
        kernel_size: kernel of the per-level convs.
        num_groups: GroupNorm groups.
    """

    def __init__(
        self,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int = 256,
        num_outs: Optional[int] = None,
        kernel_size: int = 1,
        num_groups: int = 32,
    ):
        super().__init__()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(f"ChannelMapper: in_features {missing} not in input_shapes {sorted(input_shapes)}")
        num_outs = len(in_features) if num_outs is None else num_outs
        if num_outs < len(in_features):
            raise ValueError(f"ChannelMapper: num_outs ({num_outs}) < number of in_features ({len(in_features)})")
        self.in_features = list(in_features)
        self.out_channels = out_channels
        shapes = [input_shapes[f] for f in in_features]
        self.convs = nn.ModuleList(ConvGN(s.channels, out_channels, kernel_size, 1, num_groups) for s in shapes)
        extra_in = [shapes[-1].channels] + [out_channels] * (num_outs - len(in_features) - 1)
        self.extra_convs = nn.ModuleList(
            ConvGN(c, out_channels, 3, 2, num_groups) for c in extra_in[: num_outs - len(in_features)]
        )
        self.strides = [s.stride for s in shapes]
        for _ in self.extra_convs:
            self.strides.append(self.strides[-1] * 2)

    def output_shape(self) -> List[ShapeSpec]:
        return [ShapeSpec(channels=self.out_channels, stride=s) for s in self.strides]

    def forward(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None) -> List[Tensor]:
        """
        Args:
            features: backbone outputs by name, each (N, C_i, H_i, W_i).
            mask: optional (N, H, W) bool pixel padding mask of the input images (True = pad).

        Returns:
            ``num_outs`` tensors (N, out_channels, h_l, w_l), finest first.
        """
        inputs = [features[f] for f in self.in_features]
        outs = [conv(x, mask) for conv, x in zip(self.convs, inputs)]
        x = inputs[-1]
        for conv in self.extra_convs:
            if mask is not None:  # the stride-2 conv must see zeros beyond the image, as unpadded
                x = x.masked_fill(downsample_mask(mask, x.shape[-2:])[:, None], 0.0)
            x = conv(x, mask)
            outs.append(x)
        return outs
