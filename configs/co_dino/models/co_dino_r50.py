"""Co-DINO-R50 5-scale (official ``co_dino_5scale_r50_1x_coco``): a DINO-R50 5-scale detector
(quality focal loss in the matching, denoising and positive-query branches; 900 queries; CDN with
100 denoising queries, label noise 0.5, box noise 1.0; class-wise linear Soft-NMS, IoU 0.8, on
the top-900 pairs, 300 kept) plus, during training only, K = 2 auxiliary heads on the encoder
pyramid p2..p7 (Faster R-CNN, ATSS; losses x lambda_2 * 6 decoder layers = 12) and their
customized positive queries (lambda_1 = 1, 9..300 queries per image and head).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from codetr.modeling.meta_arch import CoDETR
from codetr.modeling.queries.positive_queries import PositiveQueries

from ...dino.models.dino_r50 import model as detector

detector.backbone.out_features = ["res2", "res3", "res4", "res5"]
detector.neck.input_shapes = {
    "res2": ShapeSpec(channels=256, stride=4),
    "res3": ShapeSpec(channels=512, stride=8),
    "res4": ShapeSpec(channels=1024, stride=16),
    "res5": ShapeSpec(channels=2048, stride=32),
}
detector.neck.in_features = ["res2", "res3", "res4", "res5"]
detector.neck.num_outs = 5
detector.transformer.num_feature_levels = 5
# official Co-DINO: mmdet SinePositionalEncoding(num_feats=128, temperature=20, normalize=True), offset 0
detector.position_embedding.temperature = 20
detector.position_embedding.offset = 0.0
detector.criterion.class_loss = "qfl"
detector.nms = "soft_nms"
detector.nms_iou_threshold = 0.8
detector.nms_pre_topk = 900
detector.select_box_nums_for_evaluation = 300

LAMBDA_2 = 2.0
NUM_DECODER_LAYERS = 6
PYRAMID = ["p2", "p3", "p4", "p5", "p6", "p7"]  # encoder levels (strides 4..64) + stride 128
STRIDES = [4, 8, 16, 32, 64, 128]

model = L(CoDETR)(
    detector=detector,
    aux_heads=[
        L(build_rcnn_aux_head)(
            num_classes="${...num_classes}",
            in_features=PYRAMID,
            strides=STRIDES,
            in_channels=256,
            num_roi_levels=5,  # RoIAlign on p2..p6
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
    aux_query_weight=1.0,  # lambda_1
    eval_module="detr",
    eval_heads={"two-stage": 0, "one-stage": 1},
    num_classes=detector.num_classes,
    num_queries=detector.num_queries,
)
model.detector.num_classes = "${..num_classes}"  # one place: model.num_classes
model.detector.num_queries = "${..num_queries}"
