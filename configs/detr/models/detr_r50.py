"""DETR-R50 (facebookresearch/detr main.py defaults, models/{detr,transformer,matcher}.py).

C5 (stride 32) through a 1x1 input projection; DETR encoder (6 post-norm layers, 8 heads, FFN 2048,
dropout 0.1, ReLU) with the sine position embedding (normalised, temperature 10000) added to the
queries and keys of every attention; 100 learned queries (positions added at every decoder layer,
content starts at zero, no reference points); DETR decoder (6 post-norm layers, standard
cross-attention, one shared LayerNorm for every layer's output) with one shared class head over
80 classes + "no object" and a 3-layer box MLP predicting sigmoid cxcywh directly. Hungarian
cost class 1 (-softmax probability) / L1 5 / GIoU 2; losses softmax cross-entropy (no-object
weight 0.1) 1, L1 5, GIoU 2 at every decoder layer. Inference: per query the best class by softmax
probability, top-100, no NMS, boxes scaled to the original size and not clipped (the official
``PostProcess``; ``detectron2_postprocess=False``). Backbone: stem and res2 frozen, FrozenBN (the
official trains layer2..4).
"""
from detectron2.config import LazyCall as L

from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DETRDecoder
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import DETR
from codetr.modeling.queries import LearnedPositionQueries

from ...conditional_detr.models.conditional_detr_r50 import model as _conditional

# the backbone, position embedding, input projection and encoder are the same as Conditional DETR's
# (the official Conditional DETR kept DETR's); the decoder, queries, loss and post-processing differ
_conditional.transformer.decoder = L(DETRDecoder)(
    num_layers=6, embed_dim="${..embed_dim}", num_heads=8, ffn_dim=2048, dropout=0.1, activation="relu",
    num_classes="${...num_classes}",
)
_conditional.transformer.queries = L(LearnedPositionQueries)(
    num_queries="${...num_queries}", embed_dim="${..embed_dim}"
)

model = L(DETR)(
    backbone=_conditional.backbone,
    position_embedding=_conditional.position_embedding,
    neck=_conditional.neck,
    transformer=_conditional.transformer,
    criterion=L(DETRCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, class_cost="softmax"),
        class_loss="softmax",
        eos_coef=0.1,
        weight_class=1.0,
        weight_bbox=5.0,
        weight_giou=2.0,
    ),
    num_classes=80,
    num_queries=100,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    select_box_nums_for_evaluation=100,
    aux_loss=True,
    nms=None,
    input_format="RGB",
    detectron2_postprocess=False,
)
