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
    ``res5_dilation=2``, res5 has stride 16 instead of 32 (DC5) the way torchvision's
    ``replace_stride_with_dilation=[False, False, True]`` builds it, which is what the DETR family's
    DC5 checkpoints (DETR, Conditional DETR, DAB-DETR, DN-DETR, detrex's ``TorchvisionResNet``) were
    trained with: the first block of res5 has stride 1 and keeps dilation 1, the later blocks'
    3x3 convs have dilation 2. (Detectron2's ``RES5_DILATION`` dilates the first block too: a
    different network for the same weights.) Detectron2's ``BasicBlock`` (R18/R34) takes no
    dilation: the two 3x3 convs of the later res5 blocks are dilated after construction
    (torchvision refuses dilated basic blocks; the same rule is applied to them here)."""
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
                stage_kwargs["dilation_per_block"] = [1] + [res5_dilation] * (n - 1)
        stages.append(ResNet.make_stage(
            block_class=BasicBlock if depth < 50 else BottleneckBlock, num_blocks=n,
            stride_per_block=[stride] + [1] * (n - 1), in_channels=i, out_channels=o, **stage_kwargs,
        ))
    if depth < 50 and res5_dilation == 2:
        for block in stages[3][1:]:
            for conv in (block.conv1, block.conv2):
                conv.dilation, conv.padding = (2, 2), (2, 2)
    return stages
