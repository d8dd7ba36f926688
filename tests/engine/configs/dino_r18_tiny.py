"""DINO-R18 (configs/dino/dino_r18_shapes.py) shrunk to the tiny 64x64 test dataset."""
from ....configs.dino.dino_r18_shapes import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from .tiny_data import shrink_detr_config

shrink_detr_config(dataloader, model, train, "dino_r18_tiny")
model.denoising.num_dn_queries = 10
