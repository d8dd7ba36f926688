"""DETR-Lite0 on the shapes dataset: ``detr_r18_shapes.py`` (the setting of
``conditional_detr_r18_shapes.py``) on the ImageNet-pretrained EfficientNet-Lite0
(``configs/common/lite0.py``), read exactly as ``conditional_detr_lite0_shapes.py`` reads it: the
input projection takes the 1280-channel stride-32 ``head`` map; backbone LR x 0.1 (the DETR
recipe). The comparator of Conditional DETR's faster-convergence claim with a pretrained start."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/detr_lite0_shapes"
use_lite0(model, ["head"])
model.neck.in_feature = "head"
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
