"""Query-position modules: where a query group's positional query comes from.

A decoder owns at most one module that derives positions from the current reference at every
layer (``BoxSineQueryPosition``, DINO's ``ref_point_head``); groups that bring their own positions
(``QueryGroup.query_pos``) use them unchanged at every layer. The decoder picks, per group.
"""
from __future__ import annotations

from torch import Tensor

from codetr.layers.mlp import MLP
from codetr.layers.position_encoding import get_sine_pos_embed

__all__ = ["BoxSineQueryPosition"]


class BoxSineQueryPosition(MLP):
    """``MLP(sine(reference))``: the sine embedding of each reference coordinate (``num_feats``
    channels per coordinate, temperature 10000, scale 2 pi; for a box, in the order
    y, x, w, h as DINO's ``gen_sineembed_for_position``), then an MLP ``R * num_feats -> C -> C``
    (2 layers; DINO's ``ref_point_head`` with R = 4, num_feats = C / 2).

    forward: reference (N, Q, R) normalised -> (N, Q, C).
    """

    def __init__(self, embed_dim: int = 256, ref_dim: int = 4, num_layers: int = 2):
        num_feats = embed_dim // 2
        super().__init__(ref_dim * num_feats, embed_dim, embed_dim, num_layers)
        self.num_feats = num_feats

    def forward(self, reference: Tensor) -> Tensor:
        embed = get_sine_pos_embed(reference, self.num_feats).to(self.layers[0].weight.dtype)
        return super().forward(embed)
