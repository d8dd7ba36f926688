"""DEQDet-R50 1x on COCO (MCG-NJU/DEQDet ``eqdet_r50_1x_coco``: 46.0 AP with 100 queries).

Model: ``models/deqdet_r50.py``. Data: mmdet's 1x pipeline (flip, short side 800 / long side
<= 1333, padded to 32), images without boxes filtered. AdamW lr 2.5e-5, weight decay 0.01, the
decoder (official ``bbox_head``) at lr x 4 and weight decay x 10, nothing else special (norms and
embeddings decayed, backbone at the base lr), gradient clipping L2 1.0; total batch 16; 12 epochs,
500-iteration linear warm-up, LR x0.1 at epochs 8 and 11.
"""
from detectron2.config import LazyCall as L

from codetr.data import detr_train_augmentation

from ..common.data.coco_detr import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import lr_multiplier_1x_warmup as lr_multiplier
from ..common.train import train
from .models.deqdet_r50 import model

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/deqdet_r50_1x"
train.epochs = 12
train.clip_grad.enabled = True
train.clip_grad.max_norm = 1.0
train.clip_grad.norm_type = 2.0

optimizer.lr = 2.5e-5
optimizer.weight_decay = 0.01
optimizer.params.weight_decay = "${..weight_decay}"
optimizer.params.weight_decay_norm = None
optimizer.params.weight_decay_embed = None
optimizer.params.lr_factors = {"decoder": 4.0}
optimizer.params.weight_decay_factors = {"decoder": 10.0}

dataloader.train.dataset.filter_empty = True
dataloader.train.mapper.augmentation = L(detr_train_augmentation)(min_sizes=[800], max_size=1333)
dataloader.train.mapper.augmentation_with_crop = None
dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}"
