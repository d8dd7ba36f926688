"""Co-DINO-R50 5-scale, 12 epochs on COCO with the DETR augmentation (official
``co_dino_5scale_r50_1x_coco``: 52.1 AP).

AdamW lr 2e-4 (backbone x 0.1), weight decay 1e-4, gradient clipping (L2 0.1), total batch 16,
12 epochs with the LR divided by 10 after epoch 11; label noise 0.5, box noise 1.0.
Evaluate the auxiliary heads instead of the DETR head with ``model.eval_module=one-stage``
(ATSS) or ``two-stage`` (Faster R-CNN); turn parts off with ``model.positive_queries=None`` or
by dropping ``model.aux_heads`` entries (and ``model.positive_queries.num_heads``).
"""
from ..common.data.coco_detr import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier_12ep as lr_multiplier
from ..common.train import train
from .models.co_dino_r50 import model

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/co_dino_5scale_r50_12ep"
train.epochs = 12
train.clip_grad.enabled = True
train.clip_grad.max_norm = 0.1
train.clip_grad.norm_type = 2.0

optimizer.lr = 2e-4
optimizer.weight_decay = 1e-4
optimizer.params.lr_factors = {"backbone": 0.1}

model.detector.denoising.label_noise_ratio = 0.5
model.detector.denoising.box_noise_scale = 1.0

dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}"
