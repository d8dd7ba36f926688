"""A deliberately tiny detector for engine tests: Detectron2's RetinaNet on a 2-stage ResNet
(8/16/32 channels, one stride-8 feature level), trained on the tiny COCO-format dataset that
tests/test_train_net.py writes into $CODETR_TINY_COCO (see tiny_data.py). A fraction of a
second per iteration on one CPU core.
"""
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from detectron2.modeling import ResNet
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet, RetinaNetHead

from ....configs.common.optim import AdamW
from ....configs.common.schedule import multistep
from ....configs.common.train import train
from .tiny_data import TINY_NUM_CLASSES, TINY_TRAIN, TINY_VAL

model = L(RetinaNet)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=8, norm="BN"),
        stages=[
            [L(BasicBlock)(in_channels=8, out_channels=16, stride=1, norm="BN")],
            [L(BasicBlock)(in_channels=16, out_channels=32, stride=2, norm="BN")],
        ],
        out_features=["res3"],
    ),
    head=L(RetinaNetHead)(
        input_shape=[ShapeSpec(channels=32, stride=8)], num_classes=TINY_NUM_CLASSES, num_anchors=3, conv_dims=[32]
    ),
    head_in_features=["res3"],
    anchor_generator=L(DefaultAnchorGenerator)(sizes=[[12, 20, 32]], aspect_ratios=[[1.0]], strides=[8]),
    box2box_transform=L(Box2BoxTransform)(weights=(1.0, 1.0, 1.0, 1.0)),
    anchor_matcher=L(Matcher)(thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True),
    num_classes=TINY_NUM_CLASSES,
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
    test_score_thresh=0.0,  # keep low-confidence detections so an untrained model gets an AP
)

dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=TINY_TRAIN),
        mapper=L(DatasetMapper)(is_train=True, augmentations=[], image_format="RGB"),
        total_batch_size=2,
        num_workers=0,
    ),
    test=L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=TINY_VAL, filter_empty=False),
        mapper=L(DatasetMapper)(is_train=False, augmentations=[], image_format="RGB"),
        num_workers=0,
    ),
    evaluator=L(COCOEvaluator)(dataset_name="${..test.dataset.names}"),
)

optimizer = AdamW
lr_multiplier = multistep([1], epochs=12)

train.update(
    output_dir="./output/tiny_retinanet",
    device="cpu",
    epochs=2,
    checkpointer=dict(period=2, max_to_keep=3),
    eval_period=0,
    log_period=1,
)
