"""Co-Conditional-DETR (no public code; Co-DETR paper Table 2 reports +2.1 AP with an ATSS head on
Conditional DETR-C5), R18 on the shapes dataset: ``conditional_detr_r18_shapes.py`` plus Co-DETR's
multi-scale adapter (strides 8..128 from the stride-32 encoder map), an ATSS auxiliary head
(loss x lambda_2 * decoder layers) and its positive queries (lambda_1 = 1; their positions from
MLP(sine(point)), the decoder's ``ref_point_head``). Inference is Conditional DETR alone."""
from detectron2.config import LazyCall as L

from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.meta_arch import CoDETR
from codetr.modeling.necks import SingleScalePyramidAdapter
from codetr.modeling.queries.positive_queries import PositiveQueries

from .conditional_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, optimizer, train
from .conditional_detr_r18_shapes import model as detector  # noqa: E402

train.output_dir = "./output/co_conditional_detr_r18_shapes"
detector.transformer.decoder.ref_point_head = True

LAMBDA_2 = 2.0
NUM_DECODER_LAYERS = 3
PYRAMID = ["p3", "p4", "p5", "p6", "p7"]
STRIDES = [8, 16, 32, 64, 128]

model = L(CoDETR)(
    detector=detector,
    aux_heads=[
        L(ATSSHead)(
            num_classes="${...num_classes}",
            in_features=PYRAMID,
            strides=STRIDES,
            in_channels=HIDDEN,
            feat_channels=HIDDEN,
            loss_scale=LAMBDA_2 * NUM_DECODER_LAYERS,
        ),
    ],
    positive_queries=L(PositiveQueries)(
        num_heads=1, embed_dim=HIDDEN, num_classes="${..num_classes}", max_queries=300, min_queries=9
    ),
    pyramid_adapter=L(SingleScalePyramidAdapter)(channels=HIDDEN, in_stride=32, strides=STRIDES, num_groups=32),
    aux_query_weight=1.0,
    eval_module="detr",
    eval_heads={"one-stage": 0},
    num_classes=detector.num_classes,
    num_queries=detector.num_queries,
)
model.detector.num_classes = "${..num_classes}"
model.detector.num_queries = "${..num_queries}"
