"""TOOD-Lite0 on the shapes dataset: ``tood_r18_shapes.py`` (same FPN / T-Head widths, data, schedule,
SGD) with the FPN on the pretrained EfficientNet-Lite0 (``configs/common/lite0.py``: res3 / res4 /
res5 = 40 / 112 / 320 channels at strides 8 / 16 / 32) and its TF normalisation. The optimiser is
TOOD's (mmdet 1x: no backbone LR factor), as the paper trains its pretrained ResNet."""
from ..common.lite0 import PIXEL_MEAN, PIXEL_STD, lite0_backbone
from .tood_r18_shapes import WIDTH, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/tood_lite0_shapes"
model.backbone.bottom_up = lite0_backbone(["res3", "res4", "res5"])
model.pixel_mean = PIXEL_MEAN
model.pixel_std = PIXEL_STD
