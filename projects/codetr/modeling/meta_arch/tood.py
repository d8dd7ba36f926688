"""TOOD (Feng et al. 2021): ResNet + FPN (P3..P7) + the T-Head with Task Alignment Learning.

The one-stage flow (``OneStageDetector``: Detectron2's ``DenseDetector``) around ``TOODHead``,
which holds the assigners, losses and inference (and is also a Co-DETR auxiliary head). The TOOD
configs post-process as MMDetection's ``TOODHead``: no clipping before the NMS
(``head.test_clip_before_nms=False``), none after it and no detection dropped
(``detectron2_postprocess=False``); the class defaults are Detectron2's (clip, then
``detector_postprocess``).
"""
from __future__ import annotations

from detectron2.modeling import META_ARCH_REGISTRY

from .one_stage import LastLevelP6P7, OneStageDetector

__all__ = ["TOOD", "LastLevelP6P7"]


@META_ARCH_REGISTRY.register()
class TOOD(OneStageDetector):
    """One-stage TOOD detector: ``OneStageDetector`` with a ``TOODHead`` (its ``initial_epochs``
    / ``epochs`` / ``max_iter`` set the ATSS -> TAL switch). Training losses:
    ``{"loss_cls", "loss_bbox"}``."""
