"""ResNet naming: torchvision / mmdet layout -> Detectron2 ``ResNet`` with FrozenBN.

torchvision (and mmdet's ``ResNet``, style="pytorch")::

    conv1.weight, bn1.{weight,bias,running_mean,running_var}
    layer{1-4}.{j}.conv{1,2,3}.weight, .bn{1,2,3}.*, .downsample.0.weight, .downsample.1.*

Detectron2 (``BasicStem`` + ``BottleneckBlock``, ``norm="FrozenBN"``)::

    stem.conv1.weight, stem.conv1.norm.{weight,bias,running_mean,running_var}
    res{2-5}.{j}.conv{1,2,3}.weight, .conv{k}.norm.*, .shortcut.weight, .shortcut.norm.*

Detectron2's ``FrozenBatchNorm2d`` keeps the four BN tensors as buffers and computes
``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` with eps = 1e-5, the eps of
``torch.nn.BatchNorm2d`` and of mmdet's BN, so the statistics are copied unchanged. It has no
``num_batches_tracked``: that counter is dropped. A BN without its running statistics is an
error here (FrozenBN would otherwise silently load identity statistics for a version-less dict).
The layout has the stride in the 3x3 conv (torchvision, mmdet style="pytorch"), which is
Detectron2's ``stride_in_1x1=False``.
"""
from __future__ import annotations

import re

from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .core import DroppedKey, KeyMapper, MissingKeyError, register_source

__all__ = ["map_resnet", "BN_KEYS", "convert_torchvision_resnet"]

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def _move_bn(m: KeyMapper, src: str, dst: str) -> None:
    missing = [src + k for k in BN_KEYS if not m.has(src + k)]
    if missing:
        raise MissingKeyError(f"{m.source}: batch norm {src[:-1]!r} lacks {missing}", missing)
    for k in BN_KEYS:
        m.move(src + k, dst + k)
    if m.has(src + "num_batches_tracked"):
        m.drop(src + "num_batches_tracked", "BatchNorm step counter; FrozenBN has none")


def map_resnet(m: KeyMapper, src_prefix: str, dst_prefix: str = "backbone.", drop_fc: bool = False) -> int:
    """Map every torchvision-layout ResNet key under ``src_prefix`` to Detectron2 names under
    ``dst_prefix``. ``drop_fc`` drops the ImageNet classifier ``fc.*``. Returns the number of
    residual blocks mapped. Keys under ``src_prefix`` that are not ResNet keys are left for the
    caller (and end as unknown keys unless it handles them)."""
    p = re.escape(src_prefix)
    m.move(src_prefix + "conv1.weight", dst_prefix + "stem.conv1.weight")
    _move_bn(m, src_prefix + "bn1.", dst_prefix + "stem.conv1.norm.")
    blocks = sorted(
        {(int(g[0]), int(g[1])) for k in m.remaining() for g in re.findall(rf"^{p}layer(\d)\.(\d+)\.", k)}
    )
    for stage, j in blocks:
        src = f"{src_prefix}layer{stage}.{j}."
        dst = f"{dst_prefix}res{stage + 1}.{j}."
        for conv in (1, 2, 3):
            if not m.has(f"{src}conv{conv}.weight"):
                continue  # BasicBlock (R18/R34) has two convs
            m.move(f"{src}conv{conv}.weight", f"{dst}conv{conv}.weight")
            _move_bn(m, f"{src}bn{conv}.", f"{dst}conv{conv}.norm.")
        if m.has(src + "downsample.0.weight"):
            m.move(src + "downsample.0.weight", dst + "shortcut.weight")
            _move_bn(m, src + "downsample.1.", dst + "shortcut.norm.")
    if drop_fc:
        m.drop_matching(rf"{p}fc\.(weight|bias)", "ImageNet classifier, not part of a detection backbone")
    return len(blocks)


@register_source(
    "torchvision-resnet",
    "torchvision ImageNet ResNet state dicts (resnet50-*.pth): backbone only, e.g. for train.init_checkpoint",
)
def convert_torchvision_resnet(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    """torchvision ``resnetXX`` -> ``backbone.stem`` / ``backbone.resN`` of a Detectron2 ResNet
    (``norm="FrozenBN"``, ``stride_in_1x1=False``); the ImageNet ``fc`` is dropped."""
    m = KeyMapper(state_dict, "torchvision-resnet")
    map_resnet(m, "", "backbone.", drop_fc=True)
    return m.finish()
