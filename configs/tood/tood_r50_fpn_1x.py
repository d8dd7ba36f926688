"""TOOD-R50-FPN 1x on COCO (mmdet / fcjian/TOOD ``tood_r50_fpn_1x_coco``: 42.4 / 42.5 AP).

ResNet-50 (stem and res2 frozen, FrozenBN), FPN P3..P7 256 channels (P6 from P5, "on_output"),
T-Head (6 task-interactive convs, GN 32), anchor-free, one 8*stride anchor per location.
ATSS assignment (top 9 per level) for the first 4 epochs, then TAL (top 13, alpha 1, beta 6);
QFL / focal loss on the aligned score, GIoU weight 2. SGD lr 0.01, momentum 0.9, weight decay
1e-4, total batch 16, 12 epochs, LR x0.1 at epochs 8 and 11, 500-iteration linear warm-up.
Data: mmdet's 1x pipeline (flip, resize to short side 800 / long side <= 1333), images without
boxes filtered (mmdet's CocoDataset default). Test: top 1000 per level, score > 0.05, class-wise
NMS 0.6, 100 detections; boxes never clipped and no detection dropped, as MMDetection's
``TOODHead`` (decoded without ``max_shape``; ``_bbox_post_process`` rescales and runs the NMS):
``head.test_clip_before_nms=False``, ``detectron2_postprocess=False`` (``True`` for both gives
Detectron2's clipping).

The head's ATSS -> TAL switch, like the LR milestones and the warm-up, is a fraction of the
run: iteration ``round(initial_epochs / 12 * train.max_iter)``, where train_net.py
derives ``train.max_iter`` from the training set and the total batch size before it builds the
model (117266 COCO train2017 images with boxes / 16 = 7330 per epoch: switch at 29320, LR steps
at 58640 and 80630, 500 warm-up iterations) unless ``train.max_iter`` is given (then all of them
scale with it).
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN, BasicStem, ResNet

from codetr.data import detr_train_augmentation
from codetr.modeling.heads.tood_head import TOODHead
from codetr.modeling.meta_arch.tood import TOOD, LastLevelP6P7

from ..common.data.coco_detr import dataloader
from ..common.optim import SGD as optimizer
from ..common.schedule import lr_multiplier_1x_warmup as lr_multiplier
from ..common.train import train

model = L(TOOD)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,  # the width of the FPN and the head, written once
        top_block=L(LastLevelP6P7)(
            in_channels="${..out_channels}", out_channels="${..out_channels}", in_feature="p5", relu_before_p7=False
        ),
    ),
    head=L(TOODHead)(
        num_classes=80,
        in_features=["p3", "p4", "p5", "p6", "p7"],
        strides=[8, 16, 32, 64, 128],
        in_channels="${..backbone.out_channels}",
        feat_channels="${..backbone.out_channels}",
        stacked_convs=6,
        num_groups=32,
        anchor_type="anchor_free",
        anchor_scale=8.0,
        initial_epochs=4,
        epochs=12,  # initial_epochs are epochs of this 12-epoch schedule, stretched to train.max_iter
        max_iter="${train.max_iter}",
        atss_topk=9,
        tal_topk=13,
        alpha=1.0,
        beta=6.0,
        weight_cls=1.0,
        weight_bbox=2.0,
        test_topk_candidates=1000,
        test_score_thresh=0.05,
        test_nms_thresh=0.6,
        test_detections_per_image=100,
        test_clip_before_nms=False,  # MMDetection's TOODHead never clips
    ),
    size_divisibility=32,
    detectron2_postprocess=False,  # mmdet rescales by scale_factor, keeps every detection
)

train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
train.output_dir = "./output/tood_r50_fpn_1x"
train.epochs = 12

optimizer.lr = 0.01
optimizer.momentum = 0.9
optimizer.weight_decay = 1e-4

dataloader.train.dataset.filter_empty = True
dataloader.train.mapper.augmentation = L(detr_train_augmentation)(min_sizes=[800], max_size=1333)
dataloader.train.mapper.augmentation_with_crop = None
dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}"
