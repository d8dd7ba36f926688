"""A group of decoder queries: what a query source hands to the decoder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor

__all__ = ["QueryGroup"]


@dataclass
class QueryGroup:
    """Queries that go through the decoder together with other groups (matching, denoising,
    Co-DETR's positive queries); the decoder concatenates the groups along the query axis.

    Attributes:
        content: (N, Q, C) content queries.
        reference: (N, Q, R) initial reference, in the decoder's box-coder parametrisation
            (R = 4: normalised cxcywh boxes; R = 2: normalised (x, y) points); see
            ``codetr.modeling.coders``.
        query_pos: (N, Q, C) positions used unchanged by every decoder layer ("given"
            positions: learned position embeddings, Deformable-DETR++'s proposal positions,
            Co-Deformable-DETR's positive queries), or None: the decoder derives the positions
            from the current reference at every layer with its query-position module.
    """

    content: Tensor
    reference: Tensor
    query_pos: Optional[Tensor] = None

    @property
    def num_queries(self) -> int:
        return self.content.shape[1]
