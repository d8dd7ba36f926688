"""Class-wise NMS and Soft-NMS on absolute xyxy boxes.

- :func:`batched_nms`: hard NMS per class (``torchvision.ops.batched_nms`` with input checks).
- :func:`batched_soft_nms`: Soft-NMS per class (Bodla et al. 2017) with mmcv's ``soft_nms``
  semantics, as used by Co-DINO at test time (``iou_threshold=0.8``, linear, ``min_score=1e-3``):
  repeatedly take the highest-scoring remaining box of a class, then decay the score of every
  other remaining box of that class by

  - linear:   ``s *= 1 - iou`` if ``iou >= iou_threshold`` (else unchanged),
  - gaussian: ``s *= exp(-iou**2 / sigma)``,

  and discard boxes whose score falls below ``min_score``. IoU uses areas ``(x2-x1)*(y2-y1)``
  (mmcv ``offset=0``). One difference from mmcv: a box whose *input* score is below
  ``min_score`` is always discarded (mmcv keeps its single top box even then).

The classes are processed together: each step selects one box in every class that still has
candidates, so the loop runs ``max boxes per class`` times over (classes, boxes) tensors. Works
on any device; computations run in float32 (float64 stays float64).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torchvision.ops import batched_nms as _tv_batched_nms

__all__ = ["batched_nms", "batched_soft_nms", "soft_nms"]

_METHODS = ("linear", "gaussian")
_PRECOMPUTE_LIMIT = 1 << 22  # elements of the (classes, M, M) weight table (16 MiB in float32)


def _check(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) (xyxy), got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if scores.shape != (n,):
        raise ValueError(f"scores must have shape ({n},) to match boxes {tuple(boxes.shape)}, got {tuple(scores.shape)}")
    if idxs.shape != (n,):
        raise ValueError(f"idxs (class ids) must have shape ({n},), got {tuple(idxs.shape)}")
    if idxs.dtype.is_floating_point or idxs.dtype == torch.bool:
        raise TypeError(f"idxs (class ids) must be an integer tensor, got {idxs.dtype}")


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-wise hard NMS.

    Args:
        boxes: (N, 4) xyxy absolute.  scores: (N,).  idxs: (N,) integer class ids.
        iou_threshold: boxes with IoU > this with a higher-scoring box of the same class go.

    Returns:
        (K,) int64 indices of the kept boxes, by decreasing score.

    Boxes may reach below 0 (detectors that never clip: TOOD, DEQDet): they are shifted by
    ``min(0, boxes.min())`` first (IoU does not change), since torchvision's coordinate trick
    (class offsets ``idx * (max + 1)``) separates the classes only for non-negative boxes.
    """
    _check(boxes, scores, idxs)
    if boxes.numel():
        boxes = boxes - boxes.min().clamp(max=0)
    return _tv_batched_nms(boxes, scores, idxs, float(iou_threshold))


def _iou_rows(sel: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Broadcast IoU of xyxy boxes ``sel`` (..., 4) and ``boxes`` (..., 4), e.g. (C, 1, 4) with
    (C, M, 4) -> (C, M); 0 where the union is 0 (degenerate boxes)."""
    lt = torch.maximum(sel[..., :2], boxes[..., :2])
    rb = torch.minimum(sel[..., 2:], boxes[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_s = (sel[..., 2] - sel[..., 0]) * (sel[..., 3] - sel[..., 1])
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    union = area_s + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float = 0.8,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "linear",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class-wise Soft-NMS (mmcv ``soft_nms`` semantics, see the module docstring).

    Args:
        boxes: (N, 4) xyxy absolute.  scores: (N,).  idxs: (N,) integer class ids.
        iou_threshold: linear method: decay only boxes with IoU >= this (Co-DINO: 0.8).
        sigma: gaussian method: ``exp(-iou^2 / sigma)``.
        min_score: boxes whose (decayed) score is below this are discarded.
        method: "linear" or "gaussian".

    Returns:
        keep: (K,) int64 indices into the inputs, by decreasing updated score.
        new_scores: (K,) the updated (decayed) scores of ``keep``, same dtype as ``scores``.
    """
    _check(boxes, scores, idxs)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"sigma must be > 0 for gaussian Soft-NMS, got {sigma!r}")
    n, device = boxes.shape[0], boxes.device
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device), scores.new_empty(0)
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32

    # lay the boxes out as (classes, slots), padded with dead slots
    _, cls, counts = torch.unique(idxs, return_inverse=True, return_counts=True)
    order = torch.argsort(cls, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n, device=device) - starts[cls[order]]
    num_cls, width = counts.numel(), int(counts.max())
    grid_boxes = boxes.new_zeros((num_cls, width, 4), dtype=dtype)
    grid_scores = torch.full((num_cls, width), float("-inf"), dtype=dtype, device=device)
    grid_index = torch.full((num_cls, width), -1, dtype=torch.int64, device=device)
    row = cls[order]
    grid_boxes[row, slot] = boxes[order].to(dtype)
    grid_scores[row, slot] = scores[order].to(dtype)
    grid_index[row, slot] = order

    def decay(iou: torch.Tensor) -> torch.Tensor:
        if method == "linear":
            return torch.where(iou >= iou_threshold, 1.0 - iou, torch.ones_like(iou))
        return torch.exp(-(iou * iou) / sigma)

    # all within-class decay weights up front when they fit: (C, M, M), row i = decay by box i
    all_weights = None
    if num_cls * width * width <= _PRECOMPUTE_LIMIT:
        all_weights = decay(_iou_rows(grid_boxes[:, :, None, :], grid_boxes[:, None, :, :]))

    alive = grid_scores >= min_score  # candidates not yet selected or discarded
    selected = torch.zeros_like(alive)
    neg_inf = torch.tensor(float("-inf"), dtype=dtype, device=device)
    for step in range(width):
        if step % 16 == 0 and not bool(alive.any()):  # occasional early exit (a device sync)
            break
        best = torch.where(alive, grid_scores, neg_inf).argmax(dim=1, keepdim=True)  # (C, 1), first max on ties
        pick = torch.zeros_like(alive).scatter_(1, best, alive.gather(1, best))  # nothing where a class is done
        selected |= pick
        alive &= ~pick
        if all_weights is not None:
            weight = all_weights.gather(1, best[..., None].expand(num_cls, 1, width)).squeeze(1)
        else:
            sel_boxes = grid_boxes.gather(1, best[..., None].expand(num_cls, 1, 4))  # (C, 1, 4)
            weight = decay(_iou_rows(sel_boxes, grid_boxes))  # (C, M)
        grid_scores = torch.where(alive, grid_scores * weight, grid_scores)
        alive &= grid_scores >= min_score

    keep, new_scores = grid_index[selected], grid_scores[selected]
    new_scores, perm = torch.sort(new_scores, descending=True, stable=True)
    return keep[perm], new_scores.to(scores.dtype)


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float = 0.8,
    sigma: float = 0.5,
    min_score: float = 1e-3,
    method: str = "linear",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS over all boxes as one class; see :func:`batched_soft_nms`."""
    idxs = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    return batched_soft_nms(boxes, scores, idxs, iou_threshold, sigma, min_score, method)
