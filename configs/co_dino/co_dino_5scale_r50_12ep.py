"""Co-DINO-R50 5-scale, 12 epochs on COCO with the DETR augmentation (official
``co_dino_5scale_r50_1x_coco``: 52.1 AP).

The DETR recipe (``configs/common/detr_recipe.py``: AdamW, backbone x 0.1, weight decay 1e-4,
gradient clipping (L2 0.1), total batch 16, 12 epochs with the LR divided by 10 after epoch 11)
at lr 2e-4; label noise 0.5, box noise 1.0.
Evaluate the auxiliary heads instead of the DETR head with ``model.eval_module=one-stage``
(ATSS) or ``two-stage`` (Faster R-CNN); turn parts off with ``model.positive_queries=None`` or
by dropping ``model.aux_heads`` entries (and ``model.positive_queries.num_heads``).
"""
from ..common.detr_recipe import dataloader, lr_multiplier, optimizer, train
from .models.co_dino_r50 import model

train.output_dir = "./output/co_dino_5scale_r50_12ep"
optimizer.lr = 2e-4

model.detector.denoising.label_noise_ratio = 0.5
model.detector.denoising.box_noise_scale = 1.0
