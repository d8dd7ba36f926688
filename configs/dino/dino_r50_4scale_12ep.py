"""DINO-R50 4-scale, 12 epochs on COCO (detrex dino_r50_4scale_12ep: 49.2 AP).

AdamW lr 1e-4 (backbone x 0.1), weight decay 1e-4, gradient clipping (L2 0.1), total batch 16,
12 epochs with the LR divided by 10 after epoch 11; 900 queries, CDN with 100 denoising queries,
label noise 0.5, box noise 1.0.
"""
from ..common.data.coco_detr import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier_12ep as lr_multiplier
from ..common.train import train
from .models.dino_r50 import model

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/dino_r50_4scale_12ep"
train.epochs = 12
train.clip_grad.enabled = True
train.clip_grad.max_norm = 0.1
train.clip_grad.norm_type = 2.0

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params.lr_factors = {"backbone": 0.1}

dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}"
