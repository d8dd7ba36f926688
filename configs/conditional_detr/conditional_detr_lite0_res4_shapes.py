"""Conditional DETR-Lite0-res4 on the shapes dataset: ``conditional_detr_lite0_shapes.py`` with the
input projection reading Lite0's stride-16 ``res4`` map (``blocks.4``, 112 channels) instead of the
stride-32 1280-channel ``head``; the layers after ``blocks.4`` are not built.

A 10 x 10 memory on the 160 px test images (5 x 5 from ``head``), as DC5 gives, but cheaper than
the DC5-like dilation (``conditional_detr_dc5_lite0_shapes.py``), since it drops Lite0's last two
stages instead of running them at stride 16. Not a setting of the paper: the lever that brought the
single-scale family to >= 5 AP on this data within a CPU hour (``benchmarks/paper_claims.md``).
Use it with the official LR: ``optimizer.lr=1e-4 train.epochs=12``."""
from ..common.lite0 import use_lite0
from .conditional_detr_lite0_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/conditional_detr_lite0_res4_shapes"
use_lite0(model, ["res4"])
model.neck.in_feature = "res4"
