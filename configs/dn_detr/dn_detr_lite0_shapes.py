"""DN-DETR-Lite0 on the shapes dataset: ``dn_detr_r18_shapes.py`` (DAB-DETR + denoising) on the
pretrained EfficientNet-Lite0 of ``configs/dab_detr/dab_detr_lite0_shapes.py`` (its ``head`` map;
backbone LR x 0.1), so that the two compare directly."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .dn_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/dn_detr_lite0_shapes"
use_lite0(model, ["head"])
model.neck.in_feature = "head"
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
