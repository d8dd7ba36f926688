"""DAB-DETR-R50, 50 epochs on COCO (official: 42.2 AP); the Conditional DETR recipe."""
from ..conditional_detr.conditional_detr_r50_50ep import dataloader, lr_multiplier, optimizer, train  # noqa: F401
from .models.dab_detr_r50 import model

train.output_dir = "./output/dab_detr_r50_50ep"
