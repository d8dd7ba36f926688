"""DAB-DETR-R18 on the shapes dataset: ``conditional_detr_r18_shapes.py`` (same size, data,
schedule) with DAB-DETR's parts (as ``models/dab_detr_r50.py``): 4-d anchors refined layer by
layer, anchor-derived positions, hw-modulated attention, the scaled encoder positions, PReLU,
dropout 0, key position temperature 20, class weight 1."""
from detectron2.config import LazyCall as L

from codetr.modeling.queries import LearnedAnchorQueries

from ..conditional_detr.conditional_detr_r18_shapes import (  # noqa: F401  (HIDDEN: for the configs built on this one)
    HIDDEN, dataloader, lr_multiplier, optimizer, train,
)
from ..conditional_detr.conditional_detr_r18_shapes import model  # noqa: E402

train.output_dir = "./output/dab_detr_r18_shapes"
model.position_embedding.temperature = 20
model.transformer.encoder.update(dropout=0.0, activation="prelu", pos_scale=True)
model.transformer.decoder.update(
    dropout=0.0, activation="prelu", ref_dim=4, refine=True, ref_point_head=True, modulate_hw=True
)
model.transformer.queries = L(LearnedAnchorQueries)(num_queries="${...num_queries}", embed_dim="${..embed_dim}")
model.criterion.weight_class = 1.0
