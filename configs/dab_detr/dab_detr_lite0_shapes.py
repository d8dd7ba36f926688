"""DAB-DETR-Lite0 on the shapes dataset: ``dab_detr_r18_shapes.py`` on the pretrained EfficientNet-Lite0
of ``configs/conditional_detr/conditional_detr_lite0_shapes.py`` (its 1280-channel stride-32 ``head``
map; backbone LR x 0.1)."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .dab_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/dab_detr_lite0_shapes"
use_lite0(model, ["head"])
model.neck.in_feature = "head"
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
