"""Learned matching queries of the single-scale DETR family.

- ``LearnedPositionQueries`` (DETR): ``query_embed`` (Q, C) is the positional query of every
  layer (official key ``query_embed``); the content starts at zero; no reference (a (N, Q, 0)
  tensor: the box head predicts boxes directly).
- ``LearnedPointQueries`` (Conditional DETR): ``query_embed`` (Q, C) is the positional query of
  every layer; the content starts at zero; the reference point is
  ``s = sigmoid(ref_point_head(query_embed))`` (MLP C -> C -> 2), computed once and kept by all
  layers (official key ``transformer.decoder.ref_point_head``).
- ``LearnedAnchorQueries`` (DAB-DETR, DN-DETR): ``refpoint_embed`` (Q, 4) holds the anchors as
  logits of normalised (x, y, w, h); the decoder derives positions from the anchors; the content
  starts at zero (DAB-DETR) or is given (DN-DETR: the "unknown" label embedding with indicator 0,
  ``DenoisingGenerator.matching_content``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from codetr.layers.box_ops import inverse_sigmoid
from codetr.layers.mlp import MLP

from .group import QueryGroup

__all__ = ["LearnedAnchorQueries", "LearnedPointQueries", "LearnedPositionQueries"]


class LearnedPositionQueries(nn.Module):
    """DETR's object queries: learned positions, zero content, no reference.

    Args:
        num_queries: Q (100).
        embed_dim: C.
    ``query_embed`` is N(0, 1) (PyTorch's default, as the official release).
    """

    def __init__(self, num_queries: int = 100, embed_dim: int = 256):
        super().__init__()
        self.embed_dim = embed_dim
        self.query_embed = nn.Embedding(num_queries, embed_dim)

    def forward(self, batch_size: int, content: Optional[Tensor] = None) -> QueryGroup:
        """content: None (zeros, the official content) or (C,) one content vector for every query.
        -> QueryGroup with content (N, Q, C), reference (N, Q, 0), query_pos (N, Q, C) the query
        embedding."""
        pos = self.query_embed.weight
        content = _check_content(torch.zeros_like(pos[0]) if content is None else content, pos.shape[1], self)
        n, (q, c) = batch_size, pos.shape
        return QueryGroup(content=content.expand(n, q, c), reference=pos.new_zeros(n, q, 0),
                          query_pos=pos[None].expand(n, q, c))


class LearnedPointQueries(nn.Module):
    """Conditional DETR's object queries.

    Args:
        num_queries: Q (300).
        embed_dim: C.
    Initialisation as the official release: ``query_embed`` N(0, 1) (PyTorch's default), the
    reference-point MLP xavier-uniform (biases at PyTorch's default).
    """

    def __init__(self, num_queries: int = 300, embed_dim: int = 256):
        super().__init__()
        self.embed_dim = embed_dim
        self.query_embed = nn.Embedding(num_queries, embed_dim)
        self.ref_point_head = MLP(embed_dim, embed_dim, 2, 2)
        for layer in self.ref_point_head.layers:
            nn.init.xavier_uniform_(layer.weight)

    def forward(self, batch_size: int, content: Optional[Tensor] = None) -> QueryGroup:
        """content: None (zeros, the official content) or (C,) one content vector for every query
        (DN on Conditional DETR: ``DenoisingGenerator.matching_content``, indicator 0).
        -> QueryGroup with content (N, Q, C), reference (N, Q, 2) normalised (x, y) points,
        query_pos (N, Q, C) the query embedding."""
        pos = self.query_embed.weight
        reference = self.ref_point_head(pos).sigmoid()
        content = _check_content(torch.zeros_like(pos[0]) if content is None else content, pos.shape[1], self)
        expand = lambda t: t[None].expand(batch_size, *t.shape)  # noqa: E731
        return QueryGroup(content=content.expand(batch_size, *pos.shape), reference=expand(reference),
                          query_pos=expand(pos))


class LearnedAnchorQueries(nn.Module):
    """DAB-DETR's learned anchor boxes.

    Args:
        num_queries: Q (300).
        embed_dim: C (the width of the zero content).
        random_xy: detrex's ``freeze_anchor_box_centers`` / the official ``--random_refpoints_xy``
            initialisation: x, y logits set to ``inverse_sigmoid(U(0, 1))`` (they still train, as in
            both releases); False: every logit N(0, 1) (official default).
    """

    def __init__(self, num_queries: int = 300, embed_dim: int = 256, random_xy: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.refpoint_embed = nn.Embedding(num_queries, 4)
        if random_xy:
            with torch.no_grad():
                self.refpoint_embed.weight[:, :2].uniform_(0, 1)
                self.refpoint_embed.weight[:, :2] = inverse_sigmoid(self.refpoint_embed.weight[:, :2])

    def forward(self, batch_size: int, content: Optional[Tensor] = None) -> QueryGroup:
        """content: None (zeros) or (C,) one content vector for every query.
        -> QueryGroup with content (N, Q, C), reference (N, Q, 4) normalised cxcywh anchors,
        query_pos None (the decoder's ref_point_head derives it)."""
        anchors = self.refpoint_embed.weight.sigmoid()
        q = anchors.shape[0]
        content = _check_content(anchors.new_zeros(self.embed_dim) if content is None else content, self.embed_dim, self)
        return QueryGroup(
            content=content.expand(batch_size, q, self.embed_dim),
            reference=anchors[None].expand(batch_size, q, 4),
        )


def _check_content(content: Tensor, embed_dim: int, owner: nn.Module) -> Tensor:
    if content.shape != (embed_dim,):
        raise ValueError(f"{type(owner).__name__}: content of shape {tuple(content.shape)}, expected ({embed_dim},)")
    return content
