"""DINO-R50 4-scale (detrex projects/dino/configs/models/dino_r50.py).

The hidden width is ``model.transformer.embed_dim`` (256); the encoder, decoder, neck and
denoising read it (``position_embedding.num_pos_feats`` is half of it, set beside it)."""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import DINO
from codetr.modeling.necks import ChannelMapper
from codetr.modeling.queries.denoising import dino_denoising
from codetr.modeling.transformers import DeformableTransformer

model = L(DINO)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res3", "res4", "res5"],
        freeze_at=1,
    ),
    position_embedding=L(PositionEmbeddingSine)(num_pos_feats=128, temperature=10000, normalize=True, offset=-0.5),
    neck=L(ChannelMapper)(
        input_shapes={
            "res3": ShapeSpec(channels=512, stride=8),
            "res4": ShapeSpec(channels=1024, stride=16),
            "res5": ShapeSpec(channels=2048, stride=32),
        },
        in_features=["res3", "res4", "res5"],
        out_channels="${..transformer.embed_dim}",
        num_outs=4,
        kernel_size=1,
        num_groups=32,
    ),
    transformer=L(DeformableTransformer)(
        encoder=L(DeformableEncoder)(
            num_layers=6, embed_dim="${..embed_dim}", num_heads=8, num_levels="${..num_feature_levels}", num_points=4,
            ffn_dim=2048, dropout=0.0,
        ),
        decoder=L(DeformableDecoder)(
            num_layers=6, embed_dim="${..embed_dim}", num_heads=8, num_levels="${..num_feature_levels}", num_points=4,
            ffn_dim=2048, dropout=0.0, num_classes="${...num_classes}", look_forward_twice=True,
        ),
        num_feature_levels=4,
        num_queries="${..num_queries}",
        embed_dim=256,
        num_classes="${..num_classes}",
    ),
    criterion=L(DETRCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0),
        class_loss="focal",
        weight_class=1.0,
        weight_bbox=5.0,
        weight_giou=2.0,
    ),
    denoising=L(dino_denoising)(
        num_classes="${..num_classes}", embed_dim="${..transformer.embed_dim}", num_dn_queries=100,
        label_noise_ratio=0.5, box_noise_scale=1.0,
    ),
    num_classes=80,
    num_queries=900,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    select_box_nums_for_evaluation=300,
    aux_loss=True,
    nms=None,
    input_format="RGB",
)
