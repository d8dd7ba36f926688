"""Backbones beyond Detectron2's ResNet, registered in Detectron2's BACKBONE_REGISTRY."""
from . import efficientnet_lite
from .efficientnet_lite import *  # noqa: F401,F403  (the names of its __all__)

__all__ = list(efficientnet_lite.__all__)
