"""Conditional DETR-R50 (Atten4Vis/ConditionalDETR main.py defaults; detrex
projects/conditional_detr/configs/models/conditional_detr_r50.py).

C5 (stride 32) through a 1x1 input projection; DETR encoder (6 post-norm layers, 8 heads, FFN 2048,
dropout 0.1, ReLU); 300 learned queries (positions; content starts at zero) with reference points
sigmoid(MLP(query)); conditional decoder (6 layers) with one shared class / box head predicting
offsets from the reference point; focal loss (class 2, L1 5, GIoU 2); top-100 over queries x
classes, no NMS, boxes scaled to the original image and all kept, unclipped (official
``PostProcess``; ``detectron2_postprocess=False``). Backbone: stem and res2 frozen, as the
official release (detrex trains res2).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import ConditionalDecoder
from codetr.modeling.encoders import DETREncoder
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import ConditionalDETR
from codetr.modeling.necks import InputProjection
from codetr.modeling.necks.resnet_stages import resnet_stages
from codetr.modeling.queries import LearnedPointQueries
from codetr.modeling.transformers import SingleScaleTransformer

model = L(ConditionalDETR)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(resnet_stages)(depth=50, res5_dilation=1, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res5"],
        freeze_at=2,
    ),
    position_embedding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True, offset=0.0),
    neck=L(InputProjection)(
        input_shapes={"res5": ShapeSpec(channels=2048, stride=32)}, in_feature="res5",
        out_channels="${..transformer.embed_dim}",
    ),
    transformer=L(SingleScaleTransformer)(
        encoder=L(DETREncoder)(
            num_layers=6, embed_dim="${..embed_dim}", num_heads=8, ffn_dim=2048, dropout=0.1, activation="relu",
            pos_scale=False,
        ),
        decoder=L(ConditionalDecoder)(
            num_layers=6, embed_dim="${..embed_dim}", num_heads=8, ffn_dim=2048, dropout=0.1, activation="relu",
            num_classes="${...num_classes}", ref_dim=2, refine=False, ref_point_head=False, modulate_hw=False,
        ),
        queries=L(LearnedPointQueries)(num_queries="${...num_queries}", embed_dim="${..embed_dim}"),
        embed_dim=256,  # the hidden width, written once
    ),
    criterion=L(DETRCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0),
        class_loss="focal",
        weight_class=2.0,
        weight_bbox=5.0,
        weight_giou=2.0,
    ),
    denoising=None,
    num_classes=80,
    num_queries=300,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    select_box_nums_for_evaluation=100,  # official PostProcess: topk(..., 100) (detrex: 300)
    aux_loss=True,
    nms=None,
    input_format="RGB",
    # official PostProcess (models/conditional_detr.py; DAB-DETR / DN-DETR's DABDETR.py alike): boxes scaled to the
    # original size, none clipped or dropped
    detectron2_postprocess=False,
)
