"""Co-Conditional-DETR-R50 (C5), 36 epochs (Co-DETR paper Table 2: 41.8 AP with K = 2, 41.5 with
ATSS alone, vs 39.4 for its own 36-epoch Conditional DETR; no public code).

Conditional DETR-R50 plus, during training only, Co-DETR's multi-scale adapter (p3..p7, strides
8..128, from the stride-32 encoder map: 3x3 stride-2 conv + GN down, bilinear x2 + 3x3 conv + GN
up), Faster R-CNN and ATSS auxiliary heads (losses x lambda_2 * 6 decoder layers = 12) and their
positive queries (lambda_1 = 1; positions from MLP(sine(point)), the decoder's ``ref_point_head``).
The Conditional DETR recipe (AdamW 1e-4 / 1e-5, clip 0.1, batch 16), LR x 0.1 after epoch 30.
"""
from detectron2.config import LazyCall as L

from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from codetr.modeling.meta_arch import CoDETR
from codetr.modeling.necks import SingleScalePyramidAdapter
from codetr.modeling.queries.positive_queries import PositiveQueries

from ..common.schedule import lr_multiplier_36ep as lr_multiplier  # noqa: F401
from .conditional_detr_r50_50ep import dataloader, optimizer, train  # noqa: F401
from .conditional_detr_r50_50ep import model as detector  # noqa: E402

train.output_dir = "./output/co_conditional_detr_r50_36ep"
train.epochs = 36
detector.transformer.decoder.ref_point_head = True

LAMBDA_2 = 2.0
NUM_DECODER_LAYERS = 6
PYRAMID = ["p3", "p4", "p5", "p6", "p7"]
STRIDES = [8, 16, 32, 64, 128]

model = L(CoDETR)(
    detector=detector,
    aux_heads=[
        L(build_rcnn_aux_head)(
            num_classes="${...num_classes}",
            in_features=PYRAMID,
            strides=STRIDES,
            in_channels=256,
            num_roi_levels=4,  # RoIAlign on p3..p6
            loss_scale=LAMBDA_2 * NUM_DECODER_LAYERS,
        ),
        L(ATSSHead)(
            num_classes="${...num_classes}",
            in_features=PYRAMID,
            strides=STRIDES,
            in_channels=256,
            feat_channels=256,
            loss_scale=LAMBDA_2 * NUM_DECODER_LAYERS,
        ),
    ],
    positive_queries=L(PositiveQueries)(
        num_heads=2, embed_dim=256, num_classes="${..num_classes}", max_queries=300, min_queries=9
    ),
    pyramid_adapter=L(SingleScalePyramidAdapter)(channels=256, in_stride=32, strides=STRIDES, num_groups=32),
    aux_query_weight=1.0,
    eval_module="detr",
    eval_heads={"two-stage": 0, "one-stage": 1},
    num_classes=detector.num_classes,
    num_queries=detector.num_queries,
)
model.detector.num_classes = "${..num_classes}"
model.detector.num_queries = "${..num_queries}"
