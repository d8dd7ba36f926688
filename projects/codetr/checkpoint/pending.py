"""Sources whose target models have not landed yet, and the backbone-only torchvision source.

``mmdet-tood`` and ``tood-official`` are registered so that the CLI lists them and fails with a
clear message. What their converters will need is in
``MODEL_ZOO.md`` ("Converters still to write") and in the shared pieces of this package:
``map_resnet`` (mmdet ResNet names are torchvision's under ``backbone.``), the mmcv ConvModule /
ATSS-tower mapping of ``co_detr.py`` (TOOD's T-Head has the same towers), and ``KeyMapper``
(mapped-or-dropped bookkeeping); mmdet heads are already 80-way contiguous.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .core import DroppedKey, KeyMapper, SourceNotImplementedError, register_source
from .resnet import map_resnet

__all__ = ["PENDING_SOURCES", "convert_torchvision_resnet"]

PENDING_SOURCES = {
    "mmdet-tood": ("MMDetection TOOD weights (tood_r50_fpn_1x_coco_*.pth)", "TOOD"),
    "tood-official": ("fcjian/TOOD releases (mmdet 2.x .pth)", "TOOD"),
}


def _pending(name: str, model: str):
    def fn(state_dict, drop_training_weights: bool = False):
        raise SourceNotImplementedError(
            f"checkpoint source {name!r} is not implemented yet: the target model ({model}) has not landed in "
            f"codetr.modeling, so there is no key space to convert into. See MODEL_ZOO.md."
        )

    fn.__name__ = f"convert_{name.replace('-', '_')}"
    return fn


for _name, (_desc, _model) in PENDING_SOURCES.items():
    register_source(_name, f"{_desc} [not implemented yet]")(_pending(_name, _model))


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
