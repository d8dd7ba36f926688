"""The tiny single-scale DETR-family detectors of the tests (CPU, seconds): DETR and Conditional
DETR / DAB-DETR / DN-DETR / DN-Conditional-DETR, on a ``PatchBackbone`` (res4 read by the neck),
width 32, 3 classes. Each builder seeds torch first (``seed``), so a model's weights depend only
on its arguments."""
import torch

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import ConditionalDecoder, DETRDecoder
from codetr.modeling.encoders import DETREncoder
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import DETR, ConditionalDETR
from codetr.modeling.necks import InputProjection
from codetr.modeling.queries import LearnedAnchorQueries, LearnedPointQueries, LearnedPositionQueries
from codetr.modeling.queries.denoising import dn_detr_denoising
from codetr.modeling.transformers import SingleScaleTransformer
from support.models import PatchBackbone

D, K = 32, 3


def tiny_detr(num_queries=12, seed=0, dropout=0.0, select=10):
    """DETR: 1 encoder and 2 decoder layers, learned position queries, the softmax class loss with
    "no object" (eos_coef 0.1) and its Hungarian matcher, the top ``select`` at inference."""
    torch.manual_seed(seed)
    backbone = PatchBackbone()
    layer = dict(embed_dim=D, num_heads=4, ffn_dim=64, dropout=dropout)
    transformer = SingleScaleTransformer(
        DETREncoder(1, **layer), DETRDecoder(2, num_classes=K, **layer), LearnedPositionQueries(num_queries, D)
    )
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, class_cost="softmax")
    return DETR(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, temperature=10000, normalize=True),
        neck=InputProjection(backbone.output_shape(), "res4", D),
        transformer=transformer,
        criterion=DETRCriterion(K, matcher, class_loss="softmax", weight_class=1.0, eos_coef=0.1),
        select_box_nums_for_evaluation=select,
        num_classes=K,
        num_queries=num_queries,
    )


def tiny_conditional_detr(variant="conditional", num_queries=12, seed=0, dropout=0.0):
    """``variant``: "conditional" (Conditional DETR: learned reference points, ReLU), "dab"
    (DAB-DETR: learned anchor boxes, refined, modulated by h / w, PReLU), "dn_dab" / "dn_conditional"
    (the same with DN-DETR denoising, 2 groups). 1 encoder and 2 decoder layers, the top 20 at
    inference."""
    torch.manual_seed(seed)
    backbone = PatchBackbone()
    points = variant in ("conditional", "dn_conditional")
    dn = variant.startswith("dn_")
    layer = dict(embed_dim=D, num_heads=4, ffn_dim=64, dropout=dropout, activation="relu" if points else "prelu")
    if points:
        decoder = ConditionalDecoder(2, num_classes=K, ref_dim=2, ref_point_head=dn, **layer)
        queries = LearnedPointQueries(num_queries, D)
    else:
        decoder = ConditionalDecoder(2, num_classes=K, ref_dim=4, refine=True, ref_point_head=True, modulate_hw=True,
                                     **layer)
        queries = LearnedAnchorQueries(num_queries, D)
    transformer = SingleScaleTransformer(DETREncoder(1, pos_scale=not points, **layer), decoder, queries)
    denoising = dn_detr_denoising(K, D, num_groups=2, noise_sizes=not points) if dn else None
    return ConditionalDETR(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, temperature=10000 if points else 20, normalize=True),
        neck=InputProjection(backbone.output_shape(), "res4", D),
        transformer=transformer,
        criterion=DETRCriterion(K, weight_class=2.0 if points else 1.0),
        denoising=denoising,
        select_box_nums_for_evaluation=20,
        num_classes=K,
        num_queries=num_queries,
    )
