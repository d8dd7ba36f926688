"""ATSS-R50-FPN 1x on COCO (mmdet ``atss_r50_fpn_1x_coco``: 39.4 AP), TOOD's baseline.

ResNet-50 (stem and res2 frozen, FrozenBN), FPN P3..P7 256 channels (P6 from P5, "on_output",
no ReLU before P7), ATSS head (4 conv + GN 32 + ReLU blocks per tower, classification, box-delta
and centerness convs, a scale per level), one square anchor of side 8 * stride per location
(ratio 1, one scale), deltas with stds (0.1, 0.1, 0.2, 0.2); ATSS assignment (top 9 per level);
sigmoid focal loss (alpha 0.25, gamma 2, weight 1), GIoU on the decoded boxes weighted by the
centerness targets (weight 2), centerness BCE (weight 1). SGD lr 0.01, momentum 0.9, weight decay
1e-4, total batch 16, 12 epochs, LR x0.1 at epochs 8 and 11, 500-iteration linear warm-up. Data:
mmdet's 1x pipeline (flip, resize to short side 800 / long side <= 1333), images without boxes
filtered. Test: per level the top 1000 by class score above 0.05, scores x centerness,
class-wise NMS 0.6, 100 detections. The same backbone, neck, data and schedule as
``configs/tood/tood_r50_fpn_1x.py`` (imported from it).
"""
from detectron2.config import LazyCall as L

from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.meta_arch.atss import ATSS

from ..tood.tood_r50_fpn_1x import dataloader, lr_multiplier, optimizer, train  # noqa: F401  (the same setting)
from ..tood.tood_r50_fpn_1x import model as _tood  # noqa: E402  (one module load per statement)

model = L(ATSS)(
    backbone=_tood.backbone,
    head=L(ATSSHead)(
        num_classes=80,
        in_features=["p3", "p4", "p5", "p6", "p7"],
        strides=[8, 16, 32, 64, 128],
        in_channels="${..backbone.out_channels}",
        feat_channels="${..backbone.out_channels}",
        stacked_convs=4,
        num_groups=32,
        anchor_scale=8.0,
        topk=9,
        weight_cls=1.0,
        weight_bbox=2.0,
        weight_centerness=1.0,
        focal_alpha=0.25,
        focal_gamma=2.0,
        test_topk_candidates=1000,
        test_score_thresh=0.05,
        test_nms_thresh=0.6,
        test_detections_per_image=100,
        test_clip_before_nms=True,  # mmdet's ATSSHead decodes with max_shape (clipped), then NMS
    ),
    size_divisibility=32,
    detectron2_postprocess=False,  # mmdet rescales by scale_factor and keeps every detection
)

train.output_dir = "./output/atss_r50_fpn_1x"
