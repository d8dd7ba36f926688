"""ATSS-R18 on the bundled synthetic shapes dataset: ``configs/tood/tood_r18_shapes.py`` with the
ATSS head instead of the T-Head (the comparator of TOOD's claim), everything else identical.

The same data, augmentation and image sizes (``configs/dino/dino_r18_shapes.py``'s), the same
length (2 epochs of 500 iterations at batch 4), the same randomly initialised ResNet-18 with
BatchNorm, FPN P3..P7 of 128 channels, the same schedule (LR x0.1 at 8/12 and 11/12 of the run,
100-iteration warm-up, SGD lr 0.005). The head is ``atss_r50_fpn_1x``'s made small: 128 channels,
4 conv blocks per tower (as the T-Head's 4 task-interactive convs there), 8 classes; ATSS
assignment for the whole run (TOOD switches to TAL after 1/3). Defaults to ``train.device=cpu``.
"""
from ..common.schedule import multistep
from ..common.train_shapes import EPOCHS, resnet18_from_scratch, train
from ..dino.dino_r18_shapes import dataloader
from .atss_r50_fpn_1x import model, optimizer

WIDTH = 128

train.output_dir = "./output/atss_r18_shapes"
lr_multiplier = multistep([EPOCHS * 8 / 12, EPOCHS * 11 / 12], epochs=EPOCHS, warmup_iters=100)

optimizer.lr = 0.005

resnet18_from_scratch(model.backbone.bottom_up)
model.backbone.out_channels = WIDTH
model.backbone.top_block.update(in_channels=WIDTH, out_channels=WIDTH)
model.head.update(num_classes=8, in_channels=WIDTH, feat_channels=WIDTH, stacked_convs=4)
dataloader.evaluator.output_dir = "${train.output_dir}"
