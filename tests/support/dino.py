"""The tiny DINO and Co-DETR detectors of the tests (CPU, seconds): a ``PatchBackbone``, width 32, 3
classes, 1 encoder and 2 decoder deformable layers. Each builder seeds torch first (``seed``), so a
model's weights depend only on its arguments.

Two DINO builders, on purpose: ``tiny_dino`` (the DINO tests' model: a res3..res5 backbone, 4
levels, a choice of denoising, focal loss, top-k inference) and ``tiny_co_dino`` (the detector
inside ``tiny_co_detr``, set up as Co-DINO: a res2..res5 backbone, 5 levels by default, the QFL
class loss, Soft-NMS). Their backbones have different layers, so one builder with switches would
either build other modules or draw their parameters from the seeded generator in another order
than one of them does today: other weights under the same seed than the ones the tests were
written against."""
import torch

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from codetr.modeling.meta_arch import DINO, CoDETR
from codetr.modeling.necks import ChannelMapper
from codetr.modeling.queries.denoising import dino_denoising, dn_detr_denoising
from codetr.modeling.queries.positive_queries import PositiveQueries
from codetr.modeling.transformers import DeformableTransformer
from support.models import RES2_RES5, PatchBackbone

D, K = 32, 3


def tiny_dino(denoising="cdn", num_queries=20, seed=0):
    """The DINO tests' DINO: res3..res5 + 1 extra level (strides 8..64), look-forward-twice,
    ``denoising`` "cdn" (DINO's contrastive denoising, 10 queries), "dn" (DN-DETR's, 2 groups) or
    None; focal class loss, the top 30 at inference."""
    torch.manual_seed(seed)
    backbone = PatchBackbone()
    kw = dict(embed_dim=D, num_heads=4, num_levels=4, num_points=2, ffn_dim=64)
    transformer = DeformableTransformer(
        DeformableEncoder(1, **kw), DeformableDecoder(2, num_classes=K, look_forward_twice=True, **kw),
        num_feature_levels=4, num_queries=num_queries, embed_dim=D, num_classes=K,
    )
    if denoising == "cdn":
        dn = dino_denoising(K, D, num_dn_queries=10)
    elif denoising == "dn":
        dn = dn_detr_denoising(K, D, num_groups=2)
    else:
        dn = None
    return DINO(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5),
        neck=ChannelMapper(backbone.output_shape(), ["res3", "res4", "res5"], D, num_outs=4, num_groups=8),
        transformer=transformer,
        criterion=DETRCriterion(K),
        denoising=dn,
        select_box_nums_for_evaluation=30,
        num_classes=K,
    )


def tiny_co_dino(scales=5, class_loss="qfl", seed=0):
    """The DINO inside ``tiny_co_detr`` (Co-DINO's detector) with ``scales`` encoder levels: 5 ->
    strides 4..64 (res2..res5 + 1 extra), 4 -> strides 8..64 (res3..res5 + 1 extra); the
    ``class_loss`` (QFL by default), DINO's contrastive denoising (10 queries), Soft-NMS at
    inference (the top 30)."""
    torch.manual_seed(seed)
    backbone = PatchBackbone(levels=RES2_RES5)
    feats = ["res2", "res3", "res4", "res5"][-(scales - 1):]
    kw = dict(embed_dim=D, num_heads=4, num_levels=scales, num_points=2, ffn_dim=64)
    transformer = DeformableTransformer(
        DeformableEncoder(1, **kw), DeformableDecoder(2, num_classes=K, **kw),
        num_feature_levels=scales, num_queries=20, embed_dim=D, num_classes=K,
    )
    return DINO(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5),
        neck=ChannelMapper(backbone.output_shape(), feats, D, num_outs=scales, num_groups=8),
        transformer=transformer,
        criterion=DETRCriterion(K, class_loss=class_loss),
        denoising=dino_denoising(K, D, num_dn_queries=10),
        select_box_nums_for_evaluation=30,
        nms="soft_nms",
        num_classes=K,
    )


def tiny_co_detr(scales=5, heads=("rcnn", "atss"), with_queries=True, feats=False, seed=0, **kw):
    """Co-DETR around ``tiny_co_dino(scales, seed=seed)``: the auxiliary ``heads`` ("rcnn": Faster
    R-CNN with ``scales`` RoI levels; any other name: ATSS) on the pyramid p(7 - scales)..p7, their
    positive queries (``with_queries``; with the heads' RoI / point features when ``feats``), the
    other CoDETR arguments in ``kw``."""
    det = tiny_co_dino(scales, seed=seed)
    strides = [2**i for i in range(7 - scales, 8)]
    names = [f"p{i}" for i in range(7 - scales, 8)]
    aux = []
    for h in heads:
        if h == "rcnn":
            aux.append(build_rcnn_aux_head(K, names, strides, in_channels=D, num_roi_levels=scales, fc_dim=32,
                                           pre_nms_topk=(200, 100), post_nms_topk=(100, 100),
                                           roi_batch_size_per_image=64, return_features=feats))
        else:
            aux.append(ATSSHead(K, names, strides, in_channels=D, feat_channels=D, num_groups=8, loss_scale=12.0,
                                return_features=feats))
    pq = PositiveQueries(len(aux), D, K, feat_dim=D if feats else None) if with_queries and aux else None
    return CoDETR(det, aux, pq, pyramid_num_groups=8, **kw)
