"""DINO-Lite0 on the bundled synthetic shapes dataset: ``dino_r18_shapes.py`` (same detector size,
data, schedule and optimiser) on the ImageNet-pretrained EfficientNet-Lite0 (``configs/common/lite0.py``:
res3 / res4 / res5 = 40 / 112 / 320 channels at strides 8 / 16 / 32, FrozenBN, stem and stages
1-2 frozen, TF normalisation) with the DETR recipe's backbone LR x 0.1."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .dino_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/dino_lite0_shapes"
use_lite0(model, ["res3", "res4", "res5"])
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
