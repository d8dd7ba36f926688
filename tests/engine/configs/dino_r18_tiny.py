"""DINO-R18 (configs/dino/dino_r18_shapes.py) shrunk to the tiny 64x64 test dataset."""
from ....configs.dino.dino_r18_shapes import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from .tiny_data import TINY_NUM_CLASSES, TINY_TRAIN, TINY_VAL

dataloader.train.dataset.names = TINY_TRAIN
dataloader.test.dataset.names = TINY_VAL
dataloader.train.total_batch_size = 2
dataloader.train.mapper.crop_prob = 0.0
dataloader.train.mapper.augmentation.min_sizes = [64]
dataloader.train.mapper.augmentation.max_size = 64
dataloader.test.mapper.augmentation.short_size = 64
dataloader.test.mapper.augmentation.max_size = 64

model.num_classes = TINY_NUM_CLASSES
model.num_queries = 20
model.select_box_nums_for_evaluation = 20
model.denoising.num_dn_queries = 10
train.output_dir = "./output/dino_r18_tiny"
