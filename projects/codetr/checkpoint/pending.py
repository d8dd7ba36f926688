"""Sources whose target models have not landed yet, and the backbone-only torchvision source.

``co-detr``, ``mmdet-co-dino``, ``mmdet-tood`` and ``tood-official`` are registered so that the
CLI lists them and fails with a clear message. What their converters will need is in
``MODEL_ZOO.md`` ("Converters still to write") and in the shared pieces of this package:
``map_resnet`` (mmdet ResNet names are torchvision's under ``backbone.``), ``coco91_to_80`` (not
needed for mmdet: its heads are already 80-way contiguous), ``map_mmdet_rpn_head`` (anchor order)
and ``KeyMapper`` (mapped-or-dropped bookkeeping).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .core import DroppedKey, KeyMapper, SourceNotImplementedError, register_source
from .resnet import map_resnet

__all__ = ["PENDING_SOURCES", "convert_torchvision_resnet"]

PENDING_SOURCES = {
    "co-detr": ("Sense-X/Co-DETR releases (Co-DINO, Co-Deformable-DETR; mmdet 2.x .pth)", "Co-DETR"),
    "mmdet-co-dino": ("MMDetection 3 projects/CO-DETR weights (co_dino_5scale_*.pth)", "Co-DETR"),
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
