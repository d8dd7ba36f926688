"""ATSS-Lite0 on the shapes dataset: ``atss_r18_shapes.py`` (the ATSS head on TOOD's shapes setting)
with the FPN on the pretrained EfficientNet-Lite0 and its TF normalisation, exactly as
``configs/tood/tood_lite0_shapes.py`` swaps TOOD's backbone: the comparator of TOOD-Lite0."""
from ..common.lite0 import PIXEL_MEAN, PIXEL_STD, lite0_backbone
from .atss_r18_shapes import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/atss_lite0_shapes"
model.backbone.bottom_up = lite0_backbone(["res3", "res4", "res5"])
model.pixel_mean = PIXEL_MEAN
model.pixel_std = PIXEL_STD
