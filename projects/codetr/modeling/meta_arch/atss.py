"""ATSS (Zhang et al. 2020), the detector: ResNet + FPN (P3..P7) + ``ATSSHead`` (adaptive
training sample selection, focal loss, GIoU weighted by centerness, centerness BCE), as mmdet's
``atss_r50_fpn_1x_coco``; TOOD's baseline. The head is the one Co-DETR uses as its one-stage
auxiliary head, here with mmdet's 4-conv towers.
"""
from __future__ import annotations

from detectron2.modeling import META_ARCH_REGISTRY

from .one_stage import OneStageDetector

__all__ = ["ATSS"]


@META_ARCH_REGISTRY.register()
class ATSS(OneStageDetector):
    """One-stage ATSS detector: ``OneStageDetector`` with an ``ATSSHead``. Training losses:
    ``{"loss_cls", "loss_bbox", "loss_centerness"}``."""
