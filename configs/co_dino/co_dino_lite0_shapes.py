"""Co-DINO-Lite0 on the bundled synthetic shapes dataset: ``co_dino_r18_shapes.py`` (same detector,
auxiliary heads, data, schedule and optimiser) on the ImageNet-pretrained EfficientNet-Lite0
(``configs/common/lite0.py``, as ``configs/dino/dino_lite0_shapes.py``) with the DETR recipe's
backbone LR x 0.1, so that it compares directly with both."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .co_dino_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/co_dino_lite0_shapes"
use_lite0(model.detector, ["res3", "res4", "res5"])
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
