"""DETR-R50, 500 epochs on COCO (official detr-r50-e632da11.pth: 42.0 AP).

The DETR recipe (``configs/common/detr_recipe.py``: AdamW lr 1e-4, backbone x 0.1 = 1e-5, weight
decay 1e-4, gradient clipping L2 0.1, the DETR augmentation) at the paper's total batch of 64
(16 GPUs x 4 images) for 500 epochs with the LR divided by 10 after epoch 400 (the paper's long
schedule; ``detr_r50_300ep.py`` is the README's 300-epoch run, drop after 200).
"""
from ..common.detr_recipe import dataloader, optimizer, train  # noqa: F401
from ..common.schedule import multistep
from .models.detr_r50 import model  # noqa: F401

train.output_dir = "./output/detr_r50_500ep"
train.epochs = 500
lr_multiplier = multistep([400], epochs=500)
dataloader.train.total_batch_size = 64
