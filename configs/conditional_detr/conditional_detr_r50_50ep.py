"""Conditional DETR-R50, 50 epochs on COCO (official: 41.0 AP).

The DETR recipe (``configs/common/detr_recipe.py``: AdamW lr 1e-4, backbone x 0.1 = 1e-5, weight
decay 1e-4, gradient clipping L2 0.1, total batch 16) for 50 epochs with the LR divided by 10 after
epoch 40.
"""
from ..common.detr_recipe import dataloader, optimizer, train  # noqa: F401
from ..common.schedule import lr_multiplier_50ep as lr_multiplier  # noqa: F401
from .models.conditional_detr_r50 import model

train.output_dir = "./output/conditional_detr_r50_50ep"
train.epochs = 50
