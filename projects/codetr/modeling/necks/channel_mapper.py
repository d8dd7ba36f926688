"""ChannelMapper neck (mmdet / detrex): maps backbone levels to one width, adds extra levels.

Padding-aware: GroupNorm statistics are taken over valid (unpadded) positions only, and padded
positions are zeroed before each k > 1 convolution, so an image's features do not depend on how much it
was padded in a batch. Every level's padding mask comes from :func:`padding_mask_at_stride`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from detectron2.layers import ShapeSpec
from torch import Tensor, nn

__all__ = ["ChannelMapper", "padding_mask_at_stride", "masked_group_norm"]


def padding_mask_at_stride(mask: Tensor, stride: int, size: Optional[Sequence[int]] = None) -> Tensor:
    """The padding mask of a feature map ``stride`` times coarser than ``mask``'s grid.

    mask (N, H, W) bool, True at padding -> (N, ceil(H / stride), ceil(W / stride)) bool:
    position (i, j) is padding iff position (stride * i, stride * j) of ``mask`` is, i.e. iff the
    centre of its receptive field lies in the padding. This is how the convolutions of the pyramid
    see the image: a k x k convolution (k odd) with padding (k - 1) / 2 and stride s centres its
    output j on input s * j and has ceil(H / s) outputs (ResNet's 7x7 stem, its max-pool, 3x3 and
    1x1 stride-2 convs; the 3x3 stride-2 extra levels), and centres compose (stride a, then b: a * b).
    So an image of h valid rows has ceil(h / stride) valid rows at every level, whatever the padded
    size: exactly the rows the same image has when it runs alone, unpadded. (Nearest-neighbour
    resizing of the mask agrees only when the padded size is a multiple of ``stride``.)

    Use it for every level, from the pixel mask with the level's stride or from a level's mask
    with the stride of the convolution that makes the next one. ``size``: the feature map's
    (h, w); a map of another size (a backbone that does not produce ceil(H / stride) maps) is
    an error.
    """
    if stride < 1:
        raise ValueError(f"padding_mask_at_stride: stride must be a positive integer, got {stride}")
    height, width = mask.shape[-2:]
    ceil_size = ((height + stride - 1) // stride, (width + stride - 1) // stride)
    if size is None:
        size = ceil_size
    elif not torch.compiler.is_compiling() and tuple(ceil_size) != tuple(size):
        raise ValueError(
            f"padding_mask_at_stride: a {(height, width)} mask at stride {stride} gives a "
            f"{ceil_size} mask (ceil of size / stride) but the feature map is {tuple(size)}; "
            "the backbone/neck must produce ceil(input size / stride) maps"
        )
    # A padding mask is the complement of the image's top-left rectangle, so position (i, j) of
    # mask[:, ::stride, ::stride] is padding iff stride * i >= h or stride * j >= w, i.e. iff
    # i >= ceil(h / stride) or j >= ceil(w / stride). Written with the valid extents rather than
    # a strided slice, so that torch.export can relate the level's size to the feature map's
    # (its shape solver finds the slice's size inconsistent with the map's for dynamic sizes).
    valid_h = (~mask[:, :, 0]).sum(1)
    valid_w = (~mask[:, 0, :]).sum(1)
    rows = torch.arange(size[0], device=mask.device)[None, :, None]
    cols = torch.arange(size[1], device=mask.device)[None, None, :]
    return (rows * stride >= valid_h[:, None, None]) | (cols * stride >= valid_w[:, None, None])


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
        if kernel_size % 2 != 1:  # the padding-mask rule (padding_mask_at_stride) needs a centred kernel
            raise ValueError(f"ConvGN: kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2)
        self.norm = nn.GroupNorm(num_groups, out_channels)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x (N, C_in, H, W), mask (N, H, W) bool or None: the padding mask of x (True at padding)
        -> (N, C_out, ceil(H / stride), ceil(W / stride)) (float32 on the CPU under autocast).
        With a mask, padded inputs are zeroed before a k > 1 convolution (as beyond an unpadded
        image; a 1x1 convolution's valid outputs see no padding, and its padded outputs are left as
        they were, which Co-DETR's auxiliary heads read) and the GroupNorm statistics are taken
        over the valid outputs (``padding_mask_at_stride``)."""
        if mask is not None and self.conv.kernel_size[0] > 1:  # a 1x1 conv mixes no positions
            x = x.masked_fill(mask[:, None], 0.0)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                x = self.conv(x.float())
        else:
            x = self.conv(x)
        if mask is not None:
            mask = padding_mask_at_stride(mask, self.conv.stride[0], x.shape[-2:])
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
        masks = [None] * len(inputs)
        if mask is not None:
            masks = [padding_mask_at_stride(mask, s, x.shape[-2:]) for s, x in zip(self.strides, inputs)]
        outs = [conv(x, m) for conv, x, m in zip(self.convs, inputs, masks)]
        x, x_mask = inputs[-1], masks[-1]
        for conv in self.extra_convs:
            x = conv(x, x_mask)
            if x_mask is not None:
                x_mask = padding_mask_at_stride(x_mask, 2, x.shape[-2:])
            outs.append(x)
        return outs
