"""TOOD-R18 (configs/tood/tood_r18_shapes.py) shrunk to the tiny 64x64 test dataset."""
from ....configs.tood.tood_r18_shapes import lr_multiplier, model, optimizer, train  # noqa: F401
from .dino_r18_tiny import dataloader  # noqa: F401  (the tiny data, 6 train images, batch 2)
from .tiny_data import TINY_NUM_CLASSES

model.head.num_classes = TINY_NUM_CLASSES
model.head.initial_epochs = 2 / 3  # 1/3 of the 2-epoch schedule: round(max_iter / 3) ATSS iterations
lr_multiplier.warmup_iters = 0
train.output_dir = "./output/tood_r18_tiny"
