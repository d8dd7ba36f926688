"""Co-DETR's collaborative parts around a DETR-family detector config, written once.

``co_detr(detector, pyramid, num_decoder_layers, num_roi_levels)`` returns the
``CoDETR`` config the Co-DINO and Co-Deformable-DETR configs start from: K = 2 auxiliary heads on
the auxiliary pyramid (Faster R-CNN with RoIAlign on the first ``num_roi_levels`` levels, then
ATSS; every loss x ``lambda_2 * num_decoder_layers``, as the official code), their customized
positive queries (Co-DINO style, 9..300 per image and head, weight ``lambda_1``), evaluation of the
DETR head with the auxiliary heads selectable (``eval_module``), and ``model.num_classes`` /
``model.num_queries`` as the one place the detector, heads and queries read; the detector
post-processes as the official heads (boxes clamped to the image before the (Soft-)NMS, nothing
dropped: ``clip_before_nms``, ``detectron2_postprocess=False``). A variant overrides
fields of the result (head sizes, ``return_features``, the positive-query style).

The heads and queries read the detector's hidden width where the detector config writes it
(``width``: its path inside the detector, ``transformer.embed_dim`` for the DETR family,
``neck.out_channels`` for the AdaMixer family), so it is written once.

``pyramid`` names the levels ``p{log2 stride}``, finest first (the encoder's levels plus one
extra stride-2 level, see ``CoDETR``); the strides follow from the names.
"""
from detectron2.config import LazyCall as L

from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from codetr.modeling.meta_arch import CoDETR
from codetr.modeling.queries.positive_queries import PositiveQueries


def co_detr(detector, pyramid, num_decoder_layers, num_roi_levels, lambda_1=1.0, lambda_2=2.0,
            width="transformer.embed_dim"):
    """The CoDETR config around ``detector`` (a DETR-family model config, copied)."""
    embed_dim = "${...detector.%s}" % width  # as read from a head (an entry of model.aux_heads)
    pyramid = list(pyramid)
    strides = [2 ** int(name[1:]) for name in pyramid]
    on_pyramid = dict(  # what both heads are given
        num_classes="${...num_classes}", in_features=pyramid, strides=strides, in_channels=embed_dim,
        loss_scale=lambda_2 * num_decoder_layers,
    )
    model = L(CoDETR)(
        detector=detector,
        aux_heads=[
            L(build_rcnn_aux_head)(**on_pyramid, num_roi_levels=num_roi_levels),
            L(ATSSHead)(**on_pyramid, feat_channels=embed_dim),
        ],
        positive_queries=L(PositiveQueries)(
            num_heads=2, embed_dim="${..detector.%s}" % width, num_classes="${..num_classes}", max_queries=300,
            min_queries=9,
        ),
        aux_query_weight=lambda_1,
        eval_module="detr",
        eval_heads={"two-stage": 0, "one-stage": 1},
        num_classes=detector.num_classes,
        num_queries=detector.num_queries,
    )
    # official post-processing (Sense-X co_deformable_detr_head.py _get_bboxes_single, MMDetection 3 co_dino_head.py
    # _predict_by_feat_single): boxes clamped to img_shape before the (Soft-)NMS, none dropped afterwards
    model.detector.clip_before_nms = True
    model.detector.detectron2_postprocess = False
    model.detector.num_classes = "${..num_classes}"  # one place: model.num_classes
    model.detector.num_queries = "${..num_queries}"
    return model
