"""Detectron2 ResNet stages with an optional dilated res5 (the DC5 variant of DETR-style
detectors): ``ResNet.make_default_stages`` cannot dilate, ``build_resnet_backbone`` needs a
yacs config; this is the LazyConfig-friendly equivalent of its ``RESNETS.RES5_DILATION``."""
from __future__ import annotations

from typing import List

from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet

__all__ = ["resnet_stages"]

_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def resnet_stages(depth: int = 50, res5_dilation: int = 1, **kwargs) -> List[List]:
    """The four stages of ``ResNet.make_default_stages(depth, **kwargs)``; with
    ``res5_dilation=2`` the first block of res5 has stride 1 and every 3x3 conv of res5 dilation
    2, so res5 has stride 16 instead of 32 (DC5), as Detectron2's ``RES5_DILATION``. Detectron2's
    ``BasicBlock`` (R18/R34) takes no dilation: its two 3x3 convs are dilated after construction
    (padding 2, so the output size is the stride-1 size)."""
    if depth not in _BLOCKS:
        raise ValueError(f"resnet_stages: depth={depth}; expected one of {sorted(_BLOCKS)}")
    if res5_dilation not in (1, 2):
        raise ValueError(f"resnet_stages: res5_dilation={res5_dilation}; expected 1 or 2")
    if depth < 50:
        in_channels, out_channels = [64, 64, 128, 256], [64, 128, 256, 512]
    else:
        in_channels, out_channels = [64, 256, 512, 1024], [256, 512, 1024, 2048]
    stages: List[List] = []
    for idx, (n, i, o) in enumerate(zip(_BLOCKS[depth], in_channels, out_channels)):
        stride = 1 if idx == 0 or (idx == 3 and res5_dilation == 2) else 2
        stage_kwargs = dict(kwargs)
        if depth >= 50:
            stage_kwargs["bottleneck_channels"] = o // 4
            if idx == 3:
                stage_kwargs["dilation"] = res5_dilation
        stages.append(ResNet.make_stage(
            block_class=BasicBlock if depth < 50 else BottleneckBlock, num_blocks=n,
            stride_per_block=[stride] + [1] * (n - 1), in_channels=i, out_channels=o, **stage_kwargs,
        ))
    if depth < 50 and res5_dilation == 2:
        for block in stages[3]:
            for conv in (block.conv1, block.conv2):
                conv.dilation, conv.padding = (2, 2), (2, 2)
    return stages
