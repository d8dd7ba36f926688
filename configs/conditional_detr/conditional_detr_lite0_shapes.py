"""Conditional DETR-Lite0 on the shapes dataset: ``conditional_detr_r18_shapes.py`` (same size, data,
schedule, optimiser) on the ImageNet-pretrained EfficientNet-Lite0 (``configs/common/lite0.py``):
the input projection reads its 1280-channel stride-32 ``head`` map (conv_head + BN + ReLU6, the
map Lite0's classifier pools, as DETR reads ResNet's C5); backbone LR x 0.1 (the DETR recipe)."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .conditional_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/conditional_detr_lite0_shapes"
use_lite0(model, ["head"])
model.neck.in_feature = "head"
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
