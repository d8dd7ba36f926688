"""AdaMixer / DEQDet initial queries: learned content vectors at a fixed whole-image box.

Every query starts at the normalised cxcywh box (0.5, 0.5, 1, 1), i.e. the whole unpadded image,
as (x, y, z, r) pixels of each image (``codetr.modeling.coders``); the box embedding is
stored (the official releases' ``init_proposal_bboxes``) but frozen. The content is a learned
embedding, LayerNorm'ed (no affine) before use. (Their boxes are fixed; their targets are found by
matching, unlike ``FixedTargetQueries``, whose targets are known.)
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.modeling.coders import XYZRCoder

__all__ = ["WholeImageQueries"]


class WholeImageQueries(nn.Module):
    """Args: num_queries (100 / 300), embed_dim (256).

    State: ``boxes`` (Q, 4) normalised cxcywh (0.5, 0.5, 1, 1), a buffer (not trained, kept in the
    state dict: the official ``init_proposal_bboxes``); ``content`` (Q, C) a learned parameter
    (PyTorch's Embedding initialisation, N(0, 1)).

    forward(image_wh (N, 2) pixels) -> (content (N, Q, C), xyzr (N, Q, 4) pixels).
    """

    def __init__(self, num_queries: int = 100, embed_dim: int = 256):
        super().__init__()
        self.register_buffer("boxes", torch.tensor([0.5, 0.5, 1.0, 1.0]).repeat(num_queries, 1))
        self.content = nn.Parameter(torch.randn(num_queries, embed_dim))

    def forward(self, image_wh: Tensor) -> Tuple[Tensor, Tensor]:
        n = image_wh.shape[0]
        content = F.layer_norm(self.content, self.content.shape[-1:])
        xyzr = XYZRCoder(image_wh.to(self.boxes.dtype)).from_boxes(self.boxes.expand(n, -1, -1))
        return content.expand(n, -1, -1), xyzr
