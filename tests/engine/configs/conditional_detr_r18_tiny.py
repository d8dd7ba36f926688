"""Conditional DETR-R18 (configs/conditional_detr/conditional_detr_r18_shapes.py) shrunk to the
tiny 64x64 test dataset."""
from ....configs.conditional_detr.conditional_detr_r18_shapes import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)
from .tiny_data import shrink_detr_config

shrink_detr_config(dataloader, model, train, "conditional_detr_r18_tiny")
