"""Conditional DETR-R50, 50 epochs on COCO (official: 41.0 AP).

AdamW lr 1e-4 (backbone x 0.1 = 1e-5), weight decay 1e-4, gradient clipping (L2 0.1), total
batch 16, 50 epochs with the LR divided by 10 after epoch 40.
"""
from ..common.data.coco_detr import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier_50ep as lr_multiplier
from ..common.train import train
from .models.conditional_detr_r50 import model

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/conditional_detr_r50_50ep"
train.epochs = 50
train.clip_grad.enabled = True
train.clip_grad.max_norm = 0.1
train.clip_grad.norm_type = 2.0

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params.lr_factors = {"backbone": 0.1}

dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}"
