"""The tiny AdaMixer / DEQDet / RNNDet detectors of the tests (CPU, seconds): a ``PatchBackbone``
(res3..res5, strides 8..32), width 16, 3 classes, 6 whole-image queries."""
import torch

from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner, SequentialRefinement, adamixer_layers
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import AdaMixer, DEQDet, RNNDet
from codetr.modeling.necks.shared_norm_mapper import SharedNormChannelMapper
from codetr.modeling.queries.whole_image import WholeImageQueries
from support.models import PatchBackbone

D, K, Q = 16, 3, 6
STRIDES = (8, 16, 32)

LOOPS = {
    DEQDet: lambda: FixedPointRefinement(),
    RNNDet: lambda: UnrolledRefinement(3),
    AdaMixer: lambda: SequentialRefinement(3),
}


def tiny_adamixer(cls=DEQDet, seed=0, loop=None, num_layers=None):
    """A ``cls`` (DEQDet, RNNDet or AdaMixer) with its default loop of ``LOOPS`` (or ``loop``) over
    ``num_layers`` decoder layers (default: 3 for a SequentialRefinement, else 2), the xyxy L1
    matcher and loss of the official code. Seeds torch first (``seed``). The decoder keeps the
    official init (zero sampling offsets, mixing generators and box heads): see ``randomise``."""
    torch.manual_seed(seed)
    backbone = PatchBackbone()
    loop = LOOPS[cls]() if loop is None else loop
    num_layers = (3 if isinstance(loop, SequentialRefinement) else 2) if num_layers is None else num_layers
    layers = adamixer_layers(num_layers, embed_dim=D, num_heads=2, ffn_dim=32, num_groups=2, in_points=4,
                             out_points=3, strides=STRIDES)
    xyxy = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, l1_box_format="xyxy")
    return cls(
        backbone=backbone,
        neck=SharedNormChannelMapper(backbone.output_shape(), ["res3", "res4", "res5"], D, num_groups=4),
        queries=WholeImageQueries(Q, D),
        decoder=AdaMixerRefiner(layers, K, loop),
        criterion=DETRCriterion(K, matcher=xyxy, weight_class=2.0, l1_box_format="xyxy"),
        num_classes=K,
        num_queries=Q,
        select_box_nums_for_evaluation=Q,
    )


def randomise(model):
    """Non-trivial sampling, mixing and box heads (the official init zeroes them): normal draws
    from torch's global generator, in place; returns ``model``."""
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.sampling.offsets.weight.normal_(std=0.05)
            layer.mixing.parameter_generator.weight.normal_(std=0.05)
        for head in model.decoder.box_heads:
            head.fc.weight.normal_(std=0.02)
    return model
