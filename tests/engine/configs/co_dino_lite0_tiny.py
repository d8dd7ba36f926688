"""Co-DINO-Lite0 (configs/co_dino/co_dino_lite0_shapes.py: the ImageNet-pretrained EfficientNet-Lite0)
shrunk to the tiny 64x64 test dataset as co_dino_r18_tiny.py shrinks Co-DINO-R18."""
from ....configs.co_dino.co_dino_lite0_shapes import lr_multiplier, model, optimizer, train  # noqa: F401
from .dino_r18_tiny import dataloader  # noqa: F401  (the tiny data, 6 train images, batch 2)
from .tiny_data import TINY_NUM_CLASSES

model.num_classes = TINY_NUM_CLASSES
model.num_queries = 20
model.detector.select_box_nums_for_evaluation = 20
model.detector.nms_pre_topk = 40
model.detector.denoising.num_dn_queries = 10
model.positive_queries.max_queries = 30
train.output_dir = "./output/co_dino_lite0_tiny"
