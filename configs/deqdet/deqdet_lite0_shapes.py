"""DEQDet-Lite0 on the shapes dataset: ``deqdet_r18_shapes.py`` (same decoder, data, schedule and
optimiser: the official recipe, backbone at the base LR) on the pretrained EfficientNet-Lite0
(``configs/common/lite0.py``: res2..res5 = 24 / 40 / 112 / 320 channels at strides 4..32)."""
from ..common.lite0 import use_lite0
from .deqdet_r18_shapes import WIDTH, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/deqdet_lite0_shapes"
use_lite0(model, ["res2", "res3", "res4", "res5"])
