"""Dense label assigners as pure functions of tensors: ATSS and the task-aligned assigner (TAL).

Both work on one image. Boxes are absolute xyxy (pixels of the resized input image). The
result gives, per anchor, the index of its ground truth (``-1`` = negative) and the IoU with it;
the caller turns that into classification / regression targets.

Both rules are independent per ground truth until the last step (an anchor claimed by several
ground truths goes to the one with the highest IoU), so the work is done over chunks of ground
truths with a running maximum: memory stays O(num_anchors * chunk) on images with many objects.

- ATSS (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free Detection"):
  per level, the ``topk`` anchors closest (centre distance) to a GT are its candidates; the IoU
  threshold is mean + std of the candidates' IoUs; a candidate is positive if its IoU >= the
  threshold and its centre lies inside the GT.
- TAL (Feng et al. 2021, TOOD): alignment ``t = s^alpha * IoU^beta`` of the predicted score ``s``
  of the GT's class and the IoU of the predicted box with the GT; the ``topk`` anchors with the
  largest ``t`` over all levels are the candidates; positive if ``t > 0`` and the anchor centre
  lies inside the GT. Normalised target ``t_hat = t / max_t * max_iou`` per GT instance.

Conventions shared with mmdet (``ATSSAssigner`` / ``TaskAlignedAssigner``): the std is the
unbiased one (``torch.std``), "centre inside" means every distance from the centre to a side of
the GT is > ``center_eps`` (0.01 pixel), and ties in the final IoU maximum go to the lower index.
"""
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from codetr.layers.box_ops import box_iou

__all__ = ["ATSSAssignment", "TALAssignment", "atss_assign", "tal_assign", "normalize_alignment"]

# Anchors x ground truths per chunk; bounds the (A, G_chunk) temporaries.
DEFAULT_MAX_ELEMENTS = 1 << 22


class ATSSAssignment(NamedTuple):
    """Per-anchor result of ``atss_assign``.

    gt_index: (A,) int64, index of the assigned ground truth, -1 for negatives.
    labels: (A,) int64, class of the assigned ground truth, -1 for negatives.
    max_iou: (A,) IoU of the anchor with its assigned ground truth, 0 for negatives.
    """

    gt_index: Tensor
    labels: Tensor
    max_iou: Tensor


class TALAssignment(NamedTuple):
    """Per-anchor result of ``tal_assign``.

    gt_index, labels, max_iou: as ``ATSSAssignment``; ``max_iou`` is the IoU of the *predicted*
        box with its assigned ground truth.
    metric: (A,) alignment ``t = s^alpha * IoU^beta`` of the assigned pair, 0 for negatives.
    norm_metric: (A,) ``t_hat``: per ground-truth instance, ``t / (max t + 1e-7) * max IoU`` over
        the instance's positives (so each instance's largest ``t_hat`` equals its best IoU);
        0 for negatives. This is the soft classification target and the box-loss weight.
    """

    gt_index: Tensor
    labels: Tensor
    max_iou: Tensor
    metric: Tensor
    norm_metric: Tensor


def _compute_dtype(t: Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _centers(boxes: Tensor) -> Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _centers_inside(points: Tensor, gt_boxes: Tensor, eps: float) -> Tensor:
    """points (K, G, 2) of candidates of each GT, gt_boxes (G, 4) -> (K, G) bool, strictly inside."""
    lt = points - gt_boxes[None, :, :2]
    rb = gt_boxes[None, :, 2:] - points
    return torch.cat([lt, rb], dim=-1).min(dim=-1).values > eps


def _gt_chunks(num_anchors: int, num_gt: int, max_elements: int):
    step = max(1, max_elements // max(num_anchors, 1))
    for start in range(0, num_gt, step):
        yield start, min(num_gt, start + step)


class _RunningMax:
    """Keeps, per anchor, the claiming GT with the highest IoU across chunks of GTs."""

    def __init__(self, num_anchors: int, like: Tensor):
        self.best = like.new_full((num_anchors,), float("-inf"))
        self.index = torch.full((num_anchors,), -1, dtype=torch.long, device=like.device)

    def update(self, masked_iou: Tensor, offset: int) -> None:
        """masked_iou: (A, g) IoU where the GT claims the anchor, -inf elsewhere."""
        if masked_iou.shape[1] == 0:
            return
        value, idx = masked_iou.max(dim=1)
        better = value > self.best  # strict: on ties the earlier (lower-index) GT stays
        self.best = torch.where(better, value, self.best)
        self.index = torch.where(better, idx + offset, self.index)


def _labels_of(gt_index: Tensor, gt_labels: Optional[Tensor]) -> Tensor:
    if gt_labels is None or gt_labels.numel() == 0:
        return torch.full_like(gt_index, -1)
    labels = gt_labels.to(torch.long)[gt_index.clamp(min=0)]
    return torch.where(gt_index >= 0, labels, torch.full_like(labels, -1))


def atss_assign(
    anchors: Tensor,
    num_anchors_per_level: Sequence[int],
    gt_boxes: Tensor,
    gt_labels: Optional[Tensor] = None,
    topk: int = 9,
    center_eps: float = 0.01,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> ATSSAssignment:
    """ATSS assignment of one image.

    Args:
        anchors: (A, 4) xyxy_abs anchor boxes, all levels concatenated in level order.
        num_anchors_per_level: number of anchors of each level (sums to A).
        gt_boxes: (G, 4) xyxy_abs ground-truth boxes (G may be 0).
        gt_labels: (G,) class indices, only copied to the result's ``labels``.
        topk: candidates per level and GT (``min(topk, anchors in the level)``).
        center_eps: a candidate's centre must be > ``center_eps`` inside every side of the GT.
        max_elements: bound on anchors x GTs processed at once.
    Returns:
        ``ATSSAssignment`` (gt_index, labels, max_iou), each (A,).
    A GT with a single candidate in total has std 0 (mmdet's unbiased std would give NaN and no
    positive).
    """
    num_anchors = anchors.shape[0]
    if sum(num_anchors_per_level) != num_anchors:
        raise ValueError(
            f"atss_assign: num_anchors_per_level {list(num_anchors_per_level)} sums to "
            f"{sum(num_anchors_per_level)}, expected the number of anchors {num_anchors}"
        )
    dtype = _compute_dtype(anchors)
    anchors = anchors.to(dtype)
    gt_boxes = gt_boxes.to(device=anchors.device, dtype=dtype)
    if num_anchors == 0:
        gt_boxes = gt_boxes[:0]
    result = _RunningMax(num_anchors, anchors)
    anchor_ctr = _centers(anchors)
    level_starts = [0]
    for n in num_anchors_per_level:
        level_starts.append(level_starts[-1] + n)

    for g0, g1 in _gt_chunks(num_anchors, gt_boxes.shape[0], max_elements):
        gts = gt_boxes[g0:g1]
        ious = box_iou(anchors, gts)  # (A, g)
        # Squared centre distances, written out: cdist's matmul path loses precision.
        dist = (anchor_ctr[:, None, :] - _centers(gts)[None, :, :]).pow(2).sum(-1)  # (A, g)
        candidates = []
        for lvl, n in enumerate(num_anchors_per_level):
            if n == 0:
                continue
            k = min(topk, n)
            start = level_starts[lvl]
            _, idx = dist[start:start + n].topk(k, dim=0, largest=False)
            candidates.append(idx + start)
        cand = torch.cat(candidates, dim=0)  # (K, g) anchor indices
        cand_iou = ious.gather(0, cand)
        std = cand_iou.std(dim=0) if cand.shape[0] > 1 else torch.zeros_like(cand_iou[0])
        threshold = cand_iou.mean(dim=0) + std
        is_pos = (cand_iou >= threshold[None]) & _centers_inside(anchor_ctr[cand], gts, center_eps)
        masked = torch.full_like(ious, float("-inf"))
        masked.scatter_(0, cand, torch.where(is_pos, cand_iou, torch.full_like(cand_iou, float("-inf"))))
        result.update(masked, g0)

    gt_index = result.index
    max_iou = torch.where(gt_index >= 0, result.best, torch.zeros_like(result.best))
    return ATSSAssignment(gt_index, _labels_of(gt_index, gt_labels), max_iou)


def normalize_alignment(gt_index: Tensor, metric: Tensor, iou: Tensor, num_gt: int, eps: float = 1e-7) -> Tensor:
    """Per-instance normalisation of the alignment metric (TOOD).

    For each GT, over the anchors assigned to it: ``t_hat = t / (max t + eps) * max IoU``.
    Args: gt_index (A,) (-1 = negative), metric (A,), iou (A,) of the assigned pairs; num_gt G.
    Returns: (A,) ``t_hat``, 0 for negatives.
    """
    pos = gt_index >= 0
    idx = gt_index.clamp(min=0)
    zeros = metric.new_zeros(num_gt + 1)
    # Negatives go to an extra slot G so that they never touch a real instance's maximum.
    slot = torch.where(pos, idx, torch.full_like(idx, num_gt))
    max_t = zeros.scatter_reduce(0, slot, metric, reduce="amax", include_self=True)
    max_iou = zeros.scatter_reduce(0, slot, iou, reduce="amax", include_self=True)
    t_hat = metric / (max_t[slot] + eps) * max_iou[slot]
    return torch.where(pos, t_hat, torch.zeros_like(t_hat))


def tal_assign(
    pred_scores: Tensor,
    pred_boxes: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    topk: int = 13,
    alpha: float = 1.0,
    beta: float = 6.0,
    center_eps: float = 0.01,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> TALAssignment:
    """Task-aligned assignment (TOOD) of one image. Inputs are treated as constants (detached).

    Args:
        pred_scores: (A, C) predicted class probabilities (TOOD: the aligned sqrt score).
        pred_boxes: (A, 4) xyxy_abs predicted boxes.
        anchors: (A, 4) xyxy_abs anchors (or (A, 2) points): their centres must lie inside the GT.
        gt_boxes: (G, 4) xyxy_abs ground truths (G may be 0). gt_labels: (G,) int64 in [0, C).
        topk: candidates per GT over all levels jointly. alpha, beta: exponents of ``t``.
        center_eps: a centre must be > ``center_eps`` inside every side of the GT.
        max_elements: bound on anchors x GTs processed at once.
    Returns:
        ``TALAssignment`` (gt_index, labels, max_iou, metric, norm_metric), each (A,).
    """
    num_anchors = pred_boxes.shape[0]
    dtype = _compute_dtype(pred_boxes)
    pred_scores = pred_scores.detach().to(dtype)
    pred_boxes = pred_boxes.detach().to(dtype)
    anchors = anchors.detach().to(dtype)
    gt_boxes = gt_boxes.to(device=pred_boxes.device, dtype=dtype)
    gt_labels = gt_labels.to(device=pred_boxes.device, dtype=torch.long)
    if num_anchors == 0:
        gt_boxes, gt_labels = gt_boxes[:0], gt_labels[:0]
    points = anchors if anchors.shape[-1] == 2 else _centers(anchors)
    result = _RunningMax(num_anchors, pred_boxes)
    metric_of_best = pred_boxes.new_zeros(num_anchors)
    k = min(topk, num_anchors)

    for g0, g1 in _gt_chunks(num_anchors, gt_boxes.shape[0], max_elements):
        gts = gt_boxes[g0:g1]
        ious = box_iou(pred_boxes, gts)  # (A, g)
        scores = pred_scores[:, gt_labels[g0:g1]]  # (A, g)
        metric = scores.pow(alpha) * ious.pow(beta)
        cand_metric, cand = metric.topk(k, dim=0, largest=True)  # (k, g)
        is_pos = (cand_metric > 0) & _centers_inside(points[cand], gts, center_eps)
        masked = torch.full_like(ious, float("-inf"))
        cand_iou = ious.gather(0, cand)
        masked.scatter_(0, cand, torch.where(is_pos, cand_iou, torch.full_like(cand_iou, float("-inf"))))
        before = result.index.clone()
        result.update(masked, g0)
        changed = result.index != before
        if changed.any():
            local = (result.index - g0).clamp(min=0, max=g1 - g0 - 1)
            chosen = metric.gather(1, local[:, None])[:, 0]
            metric_of_best = torch.where(changed, chosen, metric_of_best)

    gt_index = result.index
    pos = gt_index >= 0
    max_iou = torch.where(pos, result.best, torch.zeros_like(result.best))
    metric = torch.where(pos, metric_of_best, torch.zeros_like(metric_of_best))
    norm_metric = normalize_alignment(gt_index, metric, max_iou, gt_boxes.shape[0])
    return TALAssignment(gt_index, _labels_of(gt_index, gt_labels), max_iou, metric, norm_metric)
