"""Conditional DETR-DC5-R18 on the shapes dataset: ``conditional_detr_r18_shapes.py`` with res5
dilated (stride 16, as ``conditional_detr_r50_dc5_50ep.py``): a 10 x 10 memory on the 160 px test
images instead of 5 x 5."""
from detectron2.layers import ShapeSpec

from .conditional_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/conditional_detr_dc5_r18_shapes"
model.backbone.stages.res5_dilation = 2
model.neck.input_shapes = {"res5": ShapeSpec(channels=512, stride=16)}
