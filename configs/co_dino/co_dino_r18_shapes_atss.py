"""Co-DINO-R18 on the shapes dataset with one auxiliary head (K = 1: ATSS and its positive
queries), otherwise ``co_dino_r18_shapes.py``: the K = 1 point of the paper's ablation."""
from .co_dino_r18_shapes import dataloader, lr_multiplier, model, optimizer, train

train.output_dir = "./output/co_dino_r18_shapes_atss"
model.aux_heads = [model.aux_heads[1]]
model.positive_queries.num_heads = 1
model.eval_heads = {"one-stage": 0}
