"""DEQDet-R50 2x on COCO (MCG-NJU/DEQDet ``eqdet_r50_2x_coco``: 49.6 AP; the paper's 49.5), 300
queries.

``deqdet_r50_1x`` with 300 queries (top 300 at inference), the DETR augmentation (flip, then
multi-scale 480..800 or resize 400/500/600 + crop 384..600 + multi-scale; ``common/data/coco_detr``)
and 24 epochs: 500-iteration warm-up, LR x0.1 at epochs 16 and 22.
"""
from detectron2.config import LazyCall as L

from codetr.data import detr_train_augmentation

from ..common.schedule import multistep
from .deqdet_r50_1x import dataloader, model, optimizer, train

train.output_dir = "./output/deqdet_r50_2x"
train.epochs = 24
lr_multiplier = multistep([16, 22], epochs=24, warmup_iters=500)

model.num_queries = 300

dataloader.train.mapper.augmentation = L(detr_train_augmentation)(
    min_sizes=list(range(480, 801, 32)), max_size=1333
)
dataloader.train.mapper.augmentation_with_crop = L(detr_train_augmentation)(
    min_sizes=list(range(480, 801, 32)), max_size=1333, crop_resize_sizes=[400, 500, 600], crop_size=[384, 600]
)
