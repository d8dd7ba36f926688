"""Conditional DETR-DC5-Lite0 on the shapes dataset: ``conditional_detr_lite0_shapes.py`` with Lite0's
last two stages dilated (``output_stride=16``, timm's DC5-like variant: the ``head`` map at stride
16), as ``conditional_detr_dc5_r18_shapes.py`` dilates R18's res5: a 10 x 10 memory on the 160 px
test images instead of 5 x 5."""
from ..common.lite0 import use_lite0
from .conditional_detr_lite0_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/conditional_detr_dc5_lite0_shapes"
use_lite0(model, ["head"], output_stride=16)
