"""DEQDet-R18 on the bundled synthetic shapes dataset, sized to train from scratch on a CPU.

Comparable with ``configs/dino/dino_r18_shapes.py`` and ``configs/tood/tood_r18_shapes.py``: the
same data, augmentation and image sizes (their ``dataloader``), the same length (2 epochs of 500
iterations at batch 4) and a randomly initialised ResNet-18 with BatchNorm. The model is
``deqdet_r50_1x``'s made small: neck and queries 128 channels, layers with 4 heads, FFN 512,
4 groups, P_in 16, P_out 32, 100 queries, 8 classes; the fixed-point loop as the official code runs
it (19 refinement steps, supervision at 1, 3, 6, 9, 12, 21 inference steps). The official
optimiser recipe (AdamW, weight decay 0.01, decoder lr x 4 / decay x 10, clipping 1.0) at a base lr
of 1e-4 (the COCO 2.5e-5 is for a pretrained backbone); the 1x schedule scaled to 2 epochs
(LR x0.1 at 8/12 and 11/12, a 500-of-6000-iteration warm-up: 83 iterations). Untuned.
Defaults to ``train.device=cpu``.
"""
from detectron2.layers import ShapeSpec

from ..common.train_shapes import EPOCHS, resnet18_from_scratch, shapes_training  # noqa: F401
from ..dino.dino_r18_shapes import dataloader
from .deqdet_r50_1x import lr_multiplier, model, optimizer, train  # noqa: F401

WIDTH = 128

shapes_training(train)
train.output_dir = "./output/deqdet_r18_shapes"

optimizer.lr = 1e-4

model.num_classes = 8
model.num_queries = 100
resnet18_from_scratch(model.backbone)
model.neck.input_shapes = {
    "res2": ShapeSpec(channels=64, stride=4),
    "res3": ShapeSpec(channels=128, stride=8),
    "res4": ShapeSpec(channels=256, stride=16),
    "res5": ShapeSpec(channels=512, stride=32),
}
model.neck.out_channels = WIDTH  # the queries and the decoder read it
model.decoder.layers.update(num_heads=4, ffn_dim=4 * WIDTH, num_groups=4, in_points=16, out_points=32)
dataloader.evaluator.output_dir = "${train.output_dir}"
