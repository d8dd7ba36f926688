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
from detectron2.layers import ShapeSpec

from ..common.optim import AdamW as optimizer
from ..common.schedule import multistep
from ..common.train_shapes import EPOCHS, resnet18_from_scratch, train  # noqa: F401
from ..dino.dino_r18_shapes import dataloader  # the same data, image sizes and evaluator
from .models.detr_r50 import model

HIDDEN = 128

train.output_dir = "./output/detr_r18_shapes"
train.clip_grad.enabled = True
train.clip_grad.max_norm = 0.1
lr_multiplier = multistep([11], epochs=12)  # x0.1 for the last 1/12 of the run, as 11 of 12 epochs

optimizer.lr = 5e-4
optimizer.params.lr_factors = {}

model.num_classes = 8
model.num_queries = 100

resnet18_from_scratch(model.backbone)
model.neck.input_shapes = {"res5": ShapeSpec(channels=512, stride=32)}
model.neck.out_channels = HIDDEN
model.position_embedding.num_pos_feats = HIDDEN // 2

model.transformer.encoder.update(num_layers=2, embed_dim=HIDDEN, ffn_dim=4 * HIDDEN)
model.transformer.decoder.update(num_layers=3, embed_dim=HIDDEN, ffn_dim=4 * HIDDEN)
model.transformer.queries.embed_dim = HIDDEN
