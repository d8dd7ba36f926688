"""AdaMixer's / DEQDet's neck: one convolution per backbone level to a common width, then ONE
GroupNorm shared by all levels (its statistics are still per map; the affine is shared).

- DEQDet (``ChannelMapperWithGN``: mmdet's ChannelMapper defaults + ``gn_out``): 3x3 conv with
  bias, ReLU, shared GroupNorm(32).
- AdaMixer (``ChannelMapping``): 1x1 conv with bias, no activation, shared GroupNorm(32).

Padding-aware like ``ChannelMapper``: with a pixel mask, each level's padded inputs are zeroed
before a k > 1 convolution (what the convolution sees beyond an unpadded image) and the GroupNorm
statistics are taken over each image's valid positions only (``masked_group_norm``), the level
masks being ``padding_mask_at_stride`` of the pixel mask; so an image's features inside the image
do not depend on how much it was padded in a batch.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from detectron2.layers import ShapeSpec
from torch import Tensor, nn

from .channel_mapper import masked_group_norm, padding_mask_at_stride

__all__ = ["SharedNormChannelMapper"]


class SharedNormChannelMapper(nn.Module):
    """Args:
        input_shapes: backbone ShapeSpecs by name.
        in_features: backbone outputs to map, finest first (res2..res5 for strides 4..32).
        out_channels: output width (256).
        kernel_size: 3 (DEQDet) or 1 (AdaMixer).
        activation: ReLU after each conv (DEQDet) or not (AdaMixer).
        num_groups: GroupNorm groups (32).
    Parameters: ``convs.i`` (Conv2d, Xavier-uniform weight, zero bias), ``norm`` (the shared
    GroupNorm). forward(features by name, mask (N, H, W) bool or None) -> L maps
    (N, out_channels, H_l, W_l), finest first.
    """

    def __init__(
        self,
        input_shapes: Dict[str, ShapeSpec],
        in_features: List[str],
        out_channels: int = 256,
        kernel_size: int = 3,
        activation: bool = True,
        num_groups: int = 32,
    ):
        super().__init__()
        missing = [f for f in in_features if f not in input_shapes]
        if missing:
            raise ValueError(
                f"SharedNormChannelMapper: in_features {missing} not in input_shapes {sorted(input_shapes)}"
            )
        self.in_features = list(in_features)
        self.out_channels = out_channels
        self.strides = [input_shapes[f].stride for f in in_features]
        self.convs = nn.ModuleList(
            nn.Conv2d(input_shapes[f].channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)
            for f in in_features
        )
        for conv in self.convs:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.activation = activation
        self.norm = nn.GroupNorm(num_groups, out_channels)

    def output_shape(self) -> List[ShapeSpec]:
        return [ShapeSpec(channels=self.out_channels, stride=s) for s in self.strides]

    def forward(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None) -> List[Tensor]:
        outs = []
        for name, conv, stride in zip(self.in_features, self.convs, self.strides):
            x = features[name]
            level_mask = None if mask is None else padding_mask_at_stride(mask, stride, x.shape[-2:])
            if level_mask is not None and conv.kernel_size[0] > 1:
                x = x.masked_fill(level_mask[:, None], 0.0)
            x = conv(x)
            if self.activation:
                x = x.relu()
            outs.append(masked_group_norm(x, self.norm, level_mask))
        return outs
