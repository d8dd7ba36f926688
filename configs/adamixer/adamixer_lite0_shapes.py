"""AdaMixer-Lite0 on the shapes dataset: ``adamixer_r18_shapes.py`` on the pretrained
EfficientNet-Lite0 of ``configs/deqdet/deqdet_lite0_shapes.py`` (res2..res5), so that it compares
directly with DEQDet-Lite0 and RNNDet-Lite0."""
from ..common.lite0 import use_lite0
from .adamixer_r18_shapes import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/adamixer_lite0_shapes"
use_lite0(model, ["res2", "res3", "res4", "res5"])
