"""Deformable-DETR-Lite0 on the shapes dataset: ``deformable_detr_r18_shapes.py`` (same detector
size, data, schedule and optimiser) on the ImageNet-pretrained EfficientNet-Lite0 of
``dino_lite0_shapes.py`` (res3 / res4 / res5 at strides 8 / 16 / 32) with the DETR recipe's
backbone LR x 0.1."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .deformable_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/deformable_detr_lite0_shapes"
use_lite0(model, ["res3", "res4", "res5"])
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
