"""Co-Deformable-DETR-R50 (configs/co_deformable_detr/co_deformable_detr_r50_12ep.py) on the tiny
64x64 test dataset, from random weights."""
from ....configs.co_deformable_detr.co_deformable_detr_r50_12ep import lr_multiplier, model, optimizer, train  # noqa: F401
from .dino_r18_tiny import dataloader  # noqa: F401  (the tiny data, 6 train images, batch 2)
from .tiny_data import TINY_NUM_CLASSES

model.num_classes = TINY_NUM_CLASSES
model.num_queries = 20
model.detector.select_box_nums_for_evaluation = 20
model.positive_queries.max_queries = 30
train.init_checkpoint = ""
train.output_dir = "./output/co_deformable_detr_tiny"
