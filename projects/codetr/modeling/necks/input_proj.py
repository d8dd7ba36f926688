"""DETR's input projection: one backbone map (C5, or dilated DC5) -> ``out_channels`` by a 1x1
convolution with bias, no normalisation (official key ``input_proj``)."""
from __future__ import annotations

from typing import Dict, List, Optional

from detectron2.layers import ShapeSpec
from torch import Tensor, nn

__all__ = ["InputProjection"]


class InputProjection(nn.Module):
    """Args:
        input_shapes: backbone ShapeSpecs by name.
        in_feature: the backbone output to project ("res5": stride 32; stride 16 with
            ``res5_dilation=2``, the DC5 variant).
        out_channels: C.
    PyTorch's default convolution initialisation (as the official releases)."""

    def __init__(self, input_shapes: Dict[str, ShapeSpec], in_feature: str = "res5", out_channels: int = 256):
        super().__init__()
        if in_feature not in input_shapes:
            raise ValueError(f"InputProjection: in_feature {in_feature!r} not in input_shapes {sorted(input_shapes)}")
        shape = input_shapes[in_feature]
        self.in_feature = in_feature
        self.out_channels = out_channels
        self.proj = nn.Conv2d(shape.channels, out_channels, kernel_size=1)
        self.strides = [shape.stride]

    def output_shape(self) -> List[ShapeSpec]:
        return [ShapeSpec(channels=self.out_channels, stride=self.strides[0])]

    def forward(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None) -> List[Tensor]:
        """features: backbone outputs by name; mask unused (a 1x1 conv does not mix positions).
        Returns one map (N, out_channels, H, W)."""
        return [self.proj(features[self.in_feature])]
