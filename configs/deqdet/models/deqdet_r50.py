"""DEQDet-R50 (MCG-NJU/DEQDet ``projects/configs/eqdet_r50_1x_coco.py``), 100 queries.

ResNet-50 C2..C5 (stem and res2 frozen, FrozenBN) -> ``ChannelMapperWithGN`` (3x3 conv + ReLU per
level, one shared GroupNorm(32), 256 channels, strides 4..32; ``SharedNormChannelMapper``) -> no
encoder -> 100 fixed whole-image queries -> AdaMixer layers g and f (256 channels, 8 heads, FFN
2048, 4 groups, P_in 64, P_out 128) under the fixed-point loop: training g + 2 supervised f,
no-gradient refinement steps with the refinement-aware perturbation (0.2 / 0.2, content 0.1,
position 25 px) and the 2-step gradient at steps 1, 3, 6, 9, 12; inference g + 21 f steps.

Refinement steps in training: the official code that produced the released weights runs 19 (its
``DEQDetRoIHead.loss`` loops ``for i in range(1, refinement_steps)`` with the default
``refinement_steps=20``; the config's ``supervision_position=[1, 3, 6, 9, 12, 20]`` never reaches
20), so 8 supervised outputs, not the 9 the listed positions suggest. This config does what that
code does; ``model.decoder.loop.refinement_steps=20
model.decoder.loop.supervision_positions=[1,3,6,9,12,20]`` gives the paper's description.
Losses focal 2, L1 5, GIoU 2, matching costs the same, L1 on normalised xyxy. Images padded to a
multiple of 32. Inference: top 100 over queries x classes, no NMS, all 100 returned unclipped
(``detectron2_postprocess=False``); on CUDA the backbone and neck run under fp16 autocast, as the
official ``DEQDet.predict`` (``inference_autocast="float16"``; ``null`` for fp32).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders.fixed_point import FixedPointRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner, adamixer_layers
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import DEQDet
from codetr.modeling.necks.shared_norm_mapper import SharedNormChannelMapper
from codetr.modeling.queries.whole_image import WholeImageQueries

model = L(DEQDet)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
        freeze_at=2,  # mmdet frozen_stages=1: the stem and res2
    ),
    neck=L(SharedNormChannelMapper)(
        input_shapes={
            "res2": ShapeSpec(channels=256, stride=4),
            "res3": ShapeSpec(channels=512, stride=8),
            "res4": ShapeSpec(channels=1024, stride=16),
            "res5": ShapeSpec(channels=2048, stride=32),
        },
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=256,  # the hidden width, written once: the queries and the decoder read it
        kernel_size=3,
        activation=True,
        num_groups=32,
    ),
    queries=L(WholeImageQueries)(num_queries="${..num_queries}", embed_dim="${..neck.out_channels}"),
    decoder=L(AdaMixerRefiner)(
        layers=L(adamixer_layers)(
            num_layers=2,  # g, f
            embed_dim="${...neck.out_channels}",
            num_heads=8,
            ffn_dim=2048,
            num_groups=4,
            in_points=64,
            out_points=128,
            strides=[4, 8, 16, 32],
            tau=2.0,
            dropout=0.0,
        ),
        num_classes="${..num_classes}",
        loop=L(FixedPointRefinement)(
            refinement_steps=19,  # the official training loop (see above)
            supervision_positions=[1, 3, 6, 9, 12],
            grad_steps=2,
            init_supervisions=2,
            perturb_content_prob=0.2,
            perturb_position_prob=0.2,
            content_intensity=0.1,
            position_intensity=25.0,
            inference_steps=21,  # official predict: 20 + 1
        ),
        num_cls_fcs=1,
        num_reg_fcs=1,
    ),
    criterion=L(DETRCriterion)(
        num_classes="${..num_classes}",
        matcher=L(HungarianMatcher)(
            cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0, l1_box_format="${..l1_box_format}"
        ),
        class_loss="focal",
        weight_class=2.0,
        weight_bbox=5.0,
        weight_giou=2.0,
        l1_box_format="xyxy",
    ),
    num_classes=80,
    num_queries=100,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    select_box_nums_for_evaluation="${.num_queries}",  # max_per_img = num_proposals
    aux_loss=True,
    size_divisibility=32,
    nms=None,
    input_format="RGB",
    # official post-processing (deq_det_roi_head.py DEQDetRoIHead.predict): the top-k boxes, unclipped, none dropped
    detectron2_postprocess=False,
    # official eqdet.py DEQDet.predict: backbone + neck under torch.amp.autocast("cuda", float16), maps back to fp32
    inference_autocast="float16",
)
