"""Box coders: how a decoder's query state (its reference) is parametrised, refined by a box
head's output, and turned into the predicted box.

Every coder maps a box head's output ``delta`` (..., 4) and a reference (..., R) to a predicted
box (..., 4) as normalised cxcywh of the unpadded image (what losses and inference read).

- ``BoxCoder`` (R = 4): the reference is a normalised cxcywh box (Deformable DETR, DINO,
  DAB-DETR); ``box = sigmoid(delta + logit(reference))``; refining a reference is the same map.
- ``PointCoder`` (R = 2): the reference is a normalised (x, y) point (Conditional DETR);
  ``box = sigmoid(delta + (logit(x), logit(y), 0, 0))``; refining moves the point by the first
  two channels, ``sigmoid(delta[..., :2] + logit(point))``.
- ``DirectBoxCoder`` (R = 0): no reference (DETR); the box head predicts the box itself,
  ``box = sigmoid(delta)``; there is nothing to refine.
``XYZRCoder`` (``coders/xyzr.py``, AdaMixer's pixels) implements the same methods.
"""
from __future__ import annotations

import torch
from torch import Tensor

from codetr.layers.box_ops import inverse_sigmoid

__all__ = ["BoxCoder", "DirectBoxCoder", "PointCoder"]


class BoxCoder:
    """4-d references: normalised cxcywh boxes."""

    ref_dim = 4

    def for_images(self, image_wh=None) -> "BoxCoder":
        """The coder for a batch of images: this one (normalised references need no sizes)."""
        return self

    def from_boxes(self, boxes: Tensor) -> Tensor:
        """(..., 4) normalised cxcywh boxes -> (..., R) references (identity here)."""
        return boxes

    def decode(self, delta: Tensor, reference: Tensor) -> Tensor:
        """Box head output (..., 4) relative to ``reference`` (..., R) -> (..., 4) normalised
        cxcywh boxes."""
        return (delta + inverse_sigmoid(reference)).sigmoid()

    def refine(self, delta: Tensor, reference: Tensor) -> Tensor:
        """The next layer's reference (..., R) from a box head output (..., 4)."""
        return (delta + inverse_sigmoid(reference)).sigmoid()


class PointCoder:
    """2-d references: normalised (x, y) points (box centres)."""

    ref_dim = 2

    def for_images(self, image_wh=None) -> "PointCoder":
        return self

    def from_boxes(self, boxes: Tensor) -> Tensor:
        """(..., 4) normalised cxcywh boxes -> (..., 2) their centres."""
        return boxes[..., :2]

    def decode(self, delta: Tensor, reference: Tensor) -> Tensor:
        offset = torch.cat([inverse_sigmoid(reference), torch.zeros_like(reference)], -1)
        return (delta + offset).sigmoid()

    def refine(self, delta: Tensor, reference: Tensor) -> Tensor:
        return (delta[..., :2] + inverse_sigmoid(reference)).sigmoid()


class DirectBoxCoder:
    """No reference (DETR): a query state carries no box; references are (..., 0) tensors."""

    ref_dim = 0

    def for_images(self, image_wh=None) -> "DirectBoxCoder":
        return self

    def from_boxes(self, boxes: Tensor) -> Tensor:
        """(..., 4) -> (..., 0): a box gives a DETR query nothing to start from."""
        return boxes[..., :0]

    def decode(self, delta: Tensor, reference: Tensor) -> Tensor:
        """Box head output (..., 4) -> (..., 4) normalised cxcywh ``sigmoid(delta)``."""
        return delta.sigmoid()

    def refine(self, delta: Tensor, reference: Tensor) -> Tensor:
        raise RuntimeError("DirectBoxCoder: DETR queries have no reference to refine; use refine=False")
