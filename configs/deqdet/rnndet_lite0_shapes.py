"""RNNDet-Lite0 on the shapes dataset: ``rnndet_r18_shapes.py`` on the pretrained EfficientNet-Lite0 of
``deqdet_lite0_shapes.py``, so that the two compare directly."""
from ..common.lite0 import use_lite0
from .rnndet_r18_shapes import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/rnndet_lite0_shapes"
use_lite0(model, ["res2", "res3", "res4", "res5"])
