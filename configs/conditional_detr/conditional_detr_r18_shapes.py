"""Conditional DETR-R18 on the bundled synthetic shapes dataset, sized to train from scratch on a
CPU, with the data and schedule of ``configs/dino/dino_r18_shapes.py``.

A small Conditional DETR (hidden 128, 2 encoder / 3 decoder layers, 100 queries) on a randomly
initialised ResNet-18 with BatchNorm (nothing frozen), C5 (stride 32), images resized to a short
side of 128..192 (test: 160). 2 epochs of 500 iterations at batch 4; LR 5e-4 (backbone x 1)
divided by 10 for the last 1/12 of the schedule. Defaults to ``train.device=cpu``.
"""
from detectron2.layers import ShapeSpec

from ..common.optim import AdamW as optimizer
from ..common.schedule import multistep
from ..common.train_shapes import EPOCHS, resnet18_from_scratch, train  # noqa: F401
from ..dino.dino_r18_shapes import dataloader  # the same data, image sizes and evaluator
from .models.conditional_detr_r50 import model

HIDDEN = 128

train.output_dir = "./output/conditional_detr_r18_shapes"
train.clip_grad.enabled = True
train.clip_grad.max_norm = 0.1
lr_multiplier = multistep([11], epochs=12)  # x0.1 for the last 1/12 of the run, as 11 of 12 epochs

optimizer.lr = 5e-4
optimizer.params.lr_factors = {}



def small_single_scale(model, hidden: int = HIDDEN):
    """The single-scale DETR (Conditional DETR, DAB-DETR, DETR) of this setting: 8 classes, 100
    queries, an R18 from scratch (C5), hidden ``hidden``, 2 encoder / 3 decoder layers, FFN 4x."""
    model.num_classes = 8
    model.num_queries = 100
    resnet18_from_scratch(model.backbone)
    model.neck.input_shapes = {"res5": ShapeSpec(channels=512, stride=32)}
    model.position_embedding.num_pos_feats = hidden // 2
    model.transformer.embed_dim = hidden  # the encoder, decoder, queries and neck read it
    model.transformer.encoder.update(num_layers=2, ffn_dim=4 * hidden)
    model.transformer.decoder.update(num_layers=3, ffn_dim=4 * hidden)


small_single_scale(model)
