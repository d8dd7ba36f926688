"""Co-DEQDet-R18 (configs/deqdet/co_deqdet_r18_shapes.py: DEQDet + ATSS auxiliary head on p2..p6
and its positive queries) shrunk to the tiny 64x64 test dataset as deqdet_r18_tiny.py shrinks
DEQDet: 20 queries, a narrower decoder, 3 refinement steps supervised at 1 and 3."""
from ....configs.deqdet.co_deqdet_r18_shapes import lr_multiplier, model, optimizer, train  # noqa: F401
from .dino_r18_tiny import dataloader  # noqa: F401  (the tiny data, 6 train images, batch 2)
from .tiny_data import TINY_NUM_CLASSES

model.num_classes = TINY_NUM_CLASSES
model.num_queries = 20
model.detector.decoder.layers.update(ffn_dim=64, in_points=4, out_points=8)
model.detector.decoder.loop.update(refinement_steps=3, supervision_positions=[1, 3], inference_steps=4)
model.positive_queries.max_queries = 30
lr_multiplier.warmup_iters = 0
train.output_dir = "./output/co_deqdet_r18_tiny"
