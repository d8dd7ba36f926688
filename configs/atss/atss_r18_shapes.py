"""ATSS-R18 on the bundled synthetic shapes dataset: ``configs/tood/tood_r18_shapes.py`` with the
ATSS head instead of the T-Head (the comparator of TOOD's claim), everything else identical.

The same data, augmentation and image sizes (``configs/dino/dino_r18_shapes.py``'s), the same
length (2 epochs of 500 iterations at batch 4), the same randomly initialised ResNet-18 with
BatchNorm, FPN P3..P7 of 128 channels, the same schedule (LR x0.1 at 8/12 and 11/12 of the run,
100-iteration warm-up, SGD lr 0.005). The head is ``atss_r50_fpn_1x``'s made small: 128 channels,
4 conv blocks per tower (as the T-Head's 4 task-interactive convs there), 8 classes; ATSS
assignment for the whole run (TOOD switches to TAL after 1/3). Defaults to ``train.device=cpu``.
"""
from ..tood.tood_r18_shapes import dataloader, lr_multiplier, optimizer, train  # noqa: F401  (the same setting)
from ..tood.tood_r18_shapes import model as _tood  # noqa: E402  (one module load per statement)
from .atss_r50_fpn_1x import model

train.output_dir = "./output/atss_r18_shapes"
model.backbone = _tood.backbone  # the R18 from scratch and its FPN at WIDTH channels (the head reads them)
model.head.update(num_classes=8, stacked_convs=4)
