"""DN on Conditional DETR-R18 (configs/conditional_detr/dn_conditional_detr_r18_shapes.py: DN on 2-d
reference points) shrunk to the tiny 64x64 test dataset."""
from ....configs.conditional_detr.dn_conditional_detr_r18_shapes import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)
from .tiny_data import shrink_detr_config

shrink_detr_config(dataloader, model, train, "dn_conditional_detr_r18_tiny")
