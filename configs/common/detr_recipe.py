"""The DETR-family COCO training recipe (detrex / DINO / Co-DETR), written once.

AdamW lr 1e-4 (backbone x 0.1), weight decay 1e-4, gradient clipping (total L2 norm 0.1), total
batch 16, ImageNet R-50 initialisation, 12 epochs with the LR divided by 10 after epoch 11, the
DETR augmentation (``data/coco_detr.py``). A model config imports
``dataloader, lr_multiplier, optimizer, train`` from here, sets ``train.output_dir`` and
overrides what differs (Co-DETR: ``optimizer.lr = 2e-4``).
"""
from .data.coco_detr import dataloader
from .optim import AdamW as optimizer
from .schedule import lr_multiplier_12ep as lr_multiplier
from .train import train

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.epochs = 12
train.clip_grad.enabled = True
train.clip_grad.max_norm = 0.1
train.clip_grad.norm_type = 2.0

optimizer.lr = 1e-4
optimizer.weight_decay = 1e-4
optimizer.params.lr_factors = {"backbone": 0.1}

dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}"
