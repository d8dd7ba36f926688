"""DAB-DETR-R50 (IDEA-Research/DAB-DETR main.py defaults).

Conditional DETR's parts with: 4-d learned anchors (logits, N(0, 1) init) refined layer by layer
(look-forward-twice: layer l's box is decoded from the undetached anchor); positions
MLP(sine(anchor)) at every layer; width/height-modulated spatial query; DAB's encoder (positions
scaled per layer by an MLP of the input); PReLU; dropout 0; key position embedding temperature
20; class loss weight 1 (matcher cost 2); top-300.
"""
from detectron2.config import LazyCall as L

from codetr.modeling.queries import LearnedAnchorQueries

from ...conditional_detr.models.conditional_detr_r50 import model

model.position_embedding.temperature = 20
model.transformer.encoder.update(dropout=0.0, activation="prelu", pos_scale=True)
model.transformer.decoder.update(
    dropout=0.0, activation="prelu", ref_dim=4, refine=True, ref_point_head=True, modulate_hw=True
)
# N(0, 1) anchor logits: the README's 42.2 AP command runs main.py without --random_refpoints_xy (off by default;
# detrex's freeze_anchor_box_centers=True is the official "fixxy" variant)
model.transformer.queries = L(LearnedAnchorQueries)(
    num_queries="${...num_queries}", embed_dim="${..embed_dim}", random_xy=False
)
model.criterion.weight_class = 1.0
model.select_box_nums_for_evaluation = 300  # official main.py --num_select 300
