"""DN on Conditional DETR-R18 (configs/conditional_detr/dn_conditional_detr_r18_shapes.py: DN on 2-d
reference points) shrunk to the tiny 64x64 test dataset."""
from ....configs.conditional_detr.dn_conditional_detr_r18_shapes import (  # noqa: F401
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)
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
train.output_dir = "./output/dn_conditional_detr_r18_tiny"
