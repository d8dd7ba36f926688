"""AdaMixer-layer decoders: AdaMixer (6 unshared stages), DEQDet (g + a fixed point of f) and
RNNDet (g + f unrolled), on the ``QueryDecoder`` driver.

``AdaMixerRefiner`` is the driver with AdaMixer's parts: its layers, one class and one box head
per layer (``AdaMixerHead``), the xyzr box coder (pixels; the image sizes come from the encoder
output), refinement without look-forward-twice, and positions from each query's xyzr
(``XYZRSinePosition``). Its loop decides the order of the steps and which are supervised:
``SequentialRefinement`` (layer i at step i, every layer supervised: AdaMixer / FFNDet),
``FixedPointRefinement`` (DEQDet) or ``UnrolledRefinement`` (RNNDet) from
``codetr.modeling.decoders.fixed_point`` (step index 0 = g = ``layers[0]``, 1 = f = ``layers[1]``).
"""
from __future__ import annotations

from typing import List, Sequence

from torch import nn

from codetr.modeling.coders import XYZRCoder

from .adamixer import AdaMixerDecoderLayer, AdaMixerHead, XYZRSinePosition
from .driver import QueryDecoder, SequentialRefinement, check_step_count

__all__ = ["AdaMixerRefiner", "SequentialRefinement", "adamixer_layers"]


def adamixer_layers(num_layers: int, **layer_kwargs) -> List[AdaMixerDecoderLayer]:
    """``num_layers`` independent ``AdaMixerDecoderLayer(**layer_kwargs)`` (configs: DEQDet /
    RNNDet 2 = [g, f], AdaMixer 6)."""
    num_layers = check_step_count("adamixer_layers", "num_layers", num_layers, 1)
    return [AdaMixerDecoderLayer(**layer_kwargs) for _ in range(num_layers)]


class AdaMixerRefiner(QueryDecoder):
    """AdaMixer layers, their heads and a loop on the decoder driver.

    Args:
        layers: AdaMixer layers (``[g, f]`` for DEQDet / RNNDet; 6 for AdaMixer).
        num_classes: K.
        loop: ``SequentialRefinement`` / ``FixedPointRefinement`` / ``UnrolledRefinement``.
        num_cls_fcs, num_reg_fcs: Linear + LayerNorm + ReLU blocks of each head (1, 1).
    Heads: ``class_heads[i]`` / ``box_heads[i]`` (``AdaMixerHead``, the state-dict names of the
    releases' converters) read layer i's output. ``ref_point_head``: ``XYZRSinePosition`` (no
    parameters), the query positions every step derives from the state's xyzr (groups bring no
    positions).

    forward(groups (xyzr pixel references), enc (with ``image_wh``), attn_mask=None,
    num_steps=None) -> ``DecoderOutput`` (boxes normalised cxcywh of each unpadded image) over the
    outputs the loop returns (training: every supervised output; inference: the last; the
    sequence: every stage).
    """

    head_names = ("class_heads", "box_heads")

    def __init__(
        self,
        layers: Sequence[AdaMixerDecoderLayer],
        num_classes: int,
        loop: nn.Module,
        num_cls_fcs: int = 1,
        num_reg_fcs: int = 1,
    ):
        dim = layers[0].embed_dim
        super().__init__(
            layers,
            [AdaMixerHead(dim, num_classes, num_cls_fcs, prior_prob=0.01) for _ in layers],
            [AdaMixerHead(dim, 4, num_reg_fcs, zero_last=True) for _ in layers],
            box_coder=XYZRCoder(),
            ref_point_head=XYZRSinePosition(dim),
            refine=True,
            look_forward_twice=False,
            loop=loop,
            given_positions=False,
        )
