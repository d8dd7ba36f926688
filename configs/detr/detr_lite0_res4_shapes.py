"""DETR-Lite0-res4 on the shapes dataset: ``detr_lite0_shapes.py`` reading Lite0's stride-16 ``res4``
map (112 channels), exactly as ``conditional_detr_lite0_res4_shapes.py`` reads it: the comparator of
Conditional DETR's faster-convergence claim in that setting."""
from ..common.lite0 import use_lite0
from .detr_lite0_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/detr_lite0_res4_shapes"
use_lite0(model, ["res4"])
model.neck.in_feature = "res4"
