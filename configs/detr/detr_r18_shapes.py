"""DETR-R18 on the bundled synthetic shapes dataset: the setting of
``configs/conditional_detr/conditional_detr_r18_shapes.py`` (the comparator of Conditional DETR's
faster-convergence claim), with DETR's own model.

The same data, image sizes and evaluator (``configs/dino/dino_r18_shapes.py``'s), the same
randomly initialised ResNet-18 with BatchNorm (nothing frozen), C5 (stride 32), the same small
transformer (hidden 128, 2 encoder / 3 decoder layers, FFN 512, 8 heads, dropout 0.1, 100
queries), the same schedule (2 epochs of 500 iterations at batch 4, AdamW 5e-4, backbone x 1,
divided by 10 for the last 1/12, gradient clipping 0.1). What differs is DETR's: standard
cross-attention without reference points, softmax classification with "no object" (weight 0.1;
losses CE 1 / L1 5 / GIoU 2, costs 1 / 5 / 2) and the per-query argmax inference. Defaults to
``train.device=cpu``.
"""
from ..conditional_detr.conditional_detr_r18_shapes import (  # noqa: F401  (the same setting)
    HIDDEN,
    dataloader,
    lr_multiplier,
    optimizer,
    small_single_scale,
    train,
)
from .models.detr_r50 import model

train.output_dir = "./output/detr_r18_shapes"
small_single_scale(model)
