"""Co-Conditional-DETR-Lite0 on the shapes dataset: ``co_conditional_detr_r18_shapes.py`` (the ATSS
auxiliary head and its positive queries on Conditional DETR) on the pretrained EfficientNet-Lite0
of ``conditional_detr_lite0_shapes.py`` (its ``head`` map; backbone LR x 0.1), so that the two
compare directly."""
from ..common.lite0 import BACKBONE_LR_FACTOR, use_lite0
from .co_conditional_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/co_conditional_detr_lite0_shapes"
use_lite0(model.detector, ["head"])
model.detector.neck.in_feature = "head"
optimizer.params.lr_factors = {"backbone": BACKBONE_LR_FACTOR}
