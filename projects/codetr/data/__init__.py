"""Data: dataset registration (COCO json, synthetic shapes) and DETR / LSJ dataset mappers.

Importing this package registers ``shapes_train`` and ``shapes_val`` (generated on first use).
"""
from .datasets import (
    SHAPES_SPLITS,
    coco_json_dataset,
    ensure_shapes_dataset,
    register_coco_json,
    register_shapes,
    shapes_root,
)
from .detr_mapper import DetrDatasetMapper, detr_test_augmentation, detr_train_augmentation
from .lsj_mapper import LSJDatasetMapper
from .mapper_utils import read_image_rgb
from .shapes import SHAPE_CLASSES, generate_shapes_dataset

register_shapes()

__all__ = [
    "DetrDatasetMapper",
    "LSJDatasetMapper",
    "SHAPES_SPLITS",
    "SHAPE_CLASSES",
    "coco_json_dataset",
    "detr_test_augmentation",
    "detr_train_augmentation",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "read_image_rgb",
    "register_coco_json",
    "register_shapes",
    "shapes_root",
]
