"""Backbones beyond Detectron2's ResNet, registered in Detectron2's BACKBONE_REGISTRY."""
from .efficientnet_lite import (
    LITE_OUTPUT_SHAPES,
    EfficientNetLite,
    FrozenBatchNormAct2d,
    add_efficientnet_lite_config,
    convert_frozen_batchnorm_act,
    lite_source_weights,
    lite_timm_state_dict,
    lite_weights_path,
    map_lite_keys,
)

__all__ = [
    "EfficientNetLite",
    "FrozenBatchNormAct2d",
    "LITE_OUTPUT_SHAPES",
    "add_efficientnet_lite_config",
    "convert_frozen_batchnorm_act",
    "lite_source_weights",
    "lite_timm_state_dict",
    "lite_weights_path",
    "map_lite_keys",
]
