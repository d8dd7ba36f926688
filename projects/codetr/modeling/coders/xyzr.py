"""AdaMixer's (x, y, z, r) query positions and their box coder (AdaMixer, DEQDet).

A box is parametrised by its centre (x, y), its scale ``z = log2(sqrt(w * h))`` (log2 of the
geometric-mean side) and its aspect ``r = log2(h / w)``. Back to a box:
``w = 2^(z - r/2)``, ``h = 2^(z + r/2)`` (so ``sqrt(w h) = 2^z`` and ``h / w = 2^r``).

Units: AdaMixer works in **absolute pixels of the network input** (top-left origin, the frame
of the padded batch, which for the unpadded part is the frame of each resized image): z is then
comparable with ``log2(stride)`` of the feature levels (the 3-d sampling's level weights) and the
refinement's ``2^z`` step is in pixels. The functions below are unit-agnostic; ``XYZRCoder`` converts
from/to the normalised cxcywh boxes that losses and inference read, given each image's size.

Refinement (one decoder layer's box head output ``(dx, dy, dz, dr)``):
``x += dx * 2^z``, ``y += dy * 2^z``, ``z += dz``, ``r += dr`` (the centre moves in units of the
box's geometric-mean side).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["XYZRCoder", "refine_xyzr", "xyxy_to_xyzr", "xyzr_to_xyxy", "xyzr_to_cxcywh", "cxcywh_to_xyzr"]

_LOG_EPS = 1e-7  # added to w and h before log2, as the official encoder does


def xyxy_to_xyzr(boxes: Tensor, eps: float = _LOG_EPS) -> Tensor:
    """(..., 4) (x1, y1, x2, y2) -> (..., 4) (x, y, z, r).

    ``w, h = |x2 - x1|, |y2 - y1|`` (absolute values: a box whose corners were swapped by noise
    encodes as the same box); ``z = (log2(w + eps) + log2(h + eps)) / 2``,
    ``r = log2(h + eps) - log2(w + eps)``.
    """
    xy = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    log_wh = torch.log2((boxes[..., 2:] - boxes[..., :2]).abs() + eps)
    z = log_wh.mean(-1, keepdim=True)
    r = log_wh[..., 1:2] - log_wh[..., 0:1]
    return torch.cat([xy, z, r], -1)


def _wh(xyzr: Tensor) -> Tensor:
    """(..., 4) xyzr -> (..., 2) (w, h) = 2^z * (2^(-r/2), 2^(r/2))."""
    z, r = xyzr[..., 2:3], xyzr[..., 3:4]
    return torch.exp2(torch.cat([z - 0.5 * r, z + 0.5 * r], -1))


def xyzr_to_xyxy(xyzr: Tensor) -> Tensor:
    """(..., 4) (x, y, z, r) -> (..., 4) (x1, y1, x2, y2)."""
    xy, wh = xyzr[..., :2], _wh(xyzr)
    return torch.cat([xy - 0.5 * wh, xy + 0.5 * wh], -1)


def xyzr_to_cxcywh(xyzr: Tensor) -> Tensor:
    """(..., 4) (x, y, z, r) -> (..., 4) (cx, cy, w, h)."""
    return torch.cat([xyzr[..., :2], _wh(xyzr)], -1)


def cxcywh_to_xyzr(boxes: Tensor, eps: float = _LOG_EPS) -> Tensor:
    """(..., 4) (cx, cy, w, h) -> (..., 4) (x, y, z, r) (same eps and |.| as ``xyxy_to_xyzr``)."""
    log_wh = torch.log2(boxes[..., 2:].abs() + eps)
    return torch.cat([boxes[..., :2], log_wh.mean(-1, keepdim=True), log_wh[..., 1:2] - log_wh[..., 0:1]], -1)


def refine_xyzr(xyzr: Tensor, delta: Tensor) -> Tensor:
    """Apply a box head's (dx, dy, dz, dr) (..., 4) to (..., 4) xyzr:
    ``(x + dx 2^z, y + dy 2^z, z + dz, r + dr)``."""
    step = torch.exp2(xyzr[..., 2:3])
    return torch.cat([xyzr[..., :2] + delta[..., :2] * step, xyzr[..., 2:] + delta[..., 2:]], -1)


def _per_image(image_wh: Tensor, like: Tensor) -> Tensor:
    """(N, 2) (w, h) -> broadcastable against (N, ..., 2) ``like``."""
    if image_wh.dim() != 2 or image_wh.shape[-1] != 2 or image_wh.shape[0] != like.shape[0]:
        raise ValueError(
            f"XYZRCoder: image_wh must be (N, 2) (w, h) in pixels with N = {like.shape[0]}, got shape "
            f"{tuple(image_wh.shape)}"
        )
    return image_wh.to(like.dtype).view(image_wh.shape[0], *([1] * (like.dim() - 2)), 2)


class XYZRCoder:
    """Box coder of AdaMixer's query state: the reference is (N, Q, 4) xyzr in absolute pixels.

    The same methods as ``BoxCoder`` / ``PointCoder``. Crossing between pixels and normalised
    boxes needs each image's size: ``image_wh`` (N, 2), the (w, h) in pixels of each unpadded image
    (normalised cxcywh boxes are relative to it); ``for_images(image_wh)`` gives the coder of a
    batch (the decoder driver passes ``EncoderOutput.image_wh``).
    """

    ref_dim = 4

    def __init__(self, image_wh: Optional[Tensor] = None):
        self.image_wh = image_wh

    def for_images(self, image_wh: Optional[Tensor]) -> "XYZRCoder":
        return XYZRCoder(image_wh)

    def _wh(self, like: Tensor) -> Tensor:
        if self.image_wh is None:
            raise ValueError("XYZRCoder: no image sizes (image_wh); use coder.for_images(enc.image_wh)")
        wh = _per_image(self.image_wh, like)
        return torch.cat([wh, wh], -1)

    def from_boxes(self, boxes: Tensor) -> Tensor:
        """(N, ..., 4) normalised cxcywh -> (N, ..., 4) xyzr in pixels."""
        return cxcywh_to_xyzr(boxes * self._wh(boxes))

    def decode(self, delta: Tensor, reference: Tensor) -> Tensor:
        """The box predicted by head output ``delta`` (N, ..., 4) on ``reference`` (N, ..., 4)
        xyzr: the refined reference as (N, ..., 4) normalised cxcywh."""
        return xyzr_to_cxcywh(self.refine(delta, reference)) / self._wh(reference)

    def refine(self, delta: Tensor, reference: Tensor) -> Tensor:
        """The next layer's reference: ``refine_xyzr(reference, delta)`` (pixels), in the
        reference's precision (a bf16 head output under autocast moves float32 pixels)."""
        return refine_xyzr(reference, delta.to(reference.dtype))
