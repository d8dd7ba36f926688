"""Box conversions and overlaps.

Conventions: ``cxcywh`` boxes are (centre x, centre y, width, height); ``xyxy`` boxes are
(x0, y0, x1, y1) corners. The functions are agnostic to the scale (normalised [0, 1] or absolute
pixels) as long as both operands use the same one. IoU and GIoU are invariant to a per-axis
scaling of the image, so normalised and absolute boxes give the same values.

Overlaps are computed in the dtype of the inputs; callers that need fp32 (losses, matching) cast
first. A small ``eps`` keeps degenerate boxes (zero area) from producing NaN.
"""
from typing import Tuple

import torch
from torch import Tensor

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "elementwise_box_iou",
    "elementwise_generalized_box_iou",
    "inverse_sigmoid",
]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...) area; inverted boxes count as area 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> Tuple[Tensor, Tensor]:
    """Intersection and union of broadcastable xyxy boxes (..., 4) -> (...), (...)."""
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter, union


def _enclosing_area(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Area of the smallest box enclosing both broadcastable xyxy boxes (..., 4) -> (...)."""
    lt = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of corresponding xyxy boxes: (..., 4), (..., 4) -> (...)."""
    inter, union = _inter_union(boxes1, boxes2)
    return inter / (union + eps)


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of corresponding xyxy boxes -> (...) in [-1, 1]."""
    inter, union = _inter_union(boxes1, boxes2)
    enclosing = _enclosing_area(boxes1, boxes2)
    iou = inter / (union + eps)
    return iou - (enclosing - union) / (enclosing + eps)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise IoU of xyxy boxes: (N, 4), (M, 4) -> (N, M)."""
    return elementwise_box_iou(boxes1[:, None, :], boxes2[None, :, :], eps)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """Pairwise generalized IoU of xyxy boxes: (N, 4), (M, 4) -> (N, M)."""
    return elementwise_generalized_box_iou(boxes1[:, None, :], boxes2[None, :, :], eps)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """Logit of ``x`` clamped to [0, 1]; ``eps`` bounds the result to about +-log(1/eps).

    eps=1e-3 is DINO's / detrex's value (Deformable-DETR and mmdet use 1e-5).
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
