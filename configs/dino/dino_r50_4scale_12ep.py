"""DINO-R50 4-scale, 12 epochs on COCO (detrex dino_r50_4scale_12ep: 49.2 AP).

AdamW lr 1e-4 (backbone x 0.1), weight decay 1e-4, gradient clipping (L2 0.1), total batch 16,
12 epochs with the LR divided by 10 after epoch 11; 900 queries, CDN with 100 denoising queries,
label noise 0.5, box noise 1.0.
"""
from ..common.detr_recipe import dataloader, lr_multiplier, optimizer, train
from .models.dino_r50 import model

train.output_dir = "./output/dino_r50_4scale_12ep"
