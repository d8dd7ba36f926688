"""The bundled synthetic shapes dataset (8 classes, ~256 px images), sized for CPU training:
``coco_detr.py``'s loaders (the DETR augmentation, the DETR mappers, COCOEvaluator) with other
datasets and sizes.

The DETR augmentation scaled down for ~256 px images (about 0.36x COCO's sizes): flip, then
with prob. 0.5 a multi-scale resize (short side 192..288 step 16, long side <= 480) or resize
(160/192/224) + random crop (128..224) + the same multi-scale resize. Test: short side 256,
long side <= 416. Total batch 4; no loader worker processes (2-core machines).

``shapes_train`` (2000 images) / ``shapes_val`` (200) are generated on first use (a few tens of
seconds) under ``$CODETR_DATASETS/shapes`` or ``<repo>/datasets/shapes``.
"""
from .coco_detr import dataloader

SHORT_SIDES = list(range(192, 289, 16))

dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentation.update(min_sizes=SHORT_SIDES, max_size=480)
dataloader.train.mapper.augmentation_with_crop.update(
    min_sizes=SHORT_SIDES, max_size=480, crop_resize_sizes=[160, 192, 224], crop_size=[128, 224]
)
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0

dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentation.update(short_size=256, max_size=416)
dataloader.test.num_workers = 0
