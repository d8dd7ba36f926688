"""Detection losses, unreduced, always computed in fp32.

Every function returns the per-element loss; the caller sums it and divides by an explicit
normaliser (``normalized_sum``), e.g. the all-reduced number of ground-truth boxes
(``reduce_num_boxes``, shared by the DETR criteria and the dense heads). Keeping the
reduction outside makes the normaliser visible at every call site (DETR criteria, dense heads).

Box conventions: ``l1_loss`` compares whatever parametrisation it is given (DETR: normalised
cxcywh); ``giou_loss`` takes xyxy boxes (normalised or absolute: GIoU is scale invariant).
"""
from typing import Union

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import Tensor

from codetr.layers.box_ops import elementwise_generalized_box_iou

__all__ = ["sigmoid_focal_loss", "quality_focal_loss", "l1_loss", "giou_loss", "normalized_sum", "reduce_num_boxes"]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al. 2017) on independent sigmoid outputs.

    Args:
        logits: (..., C) raw scores.
        targets: (..., C) binary targets (one-hot rows; all-zero rows for background).
        alpha: weight of the positive term, ``1 - alpha`` weighs the negative term (< 0 disables).
        gamma: focusing exponent.
    Returns:
        (..., C) fp32 loss ``-alpha_t (1 - p_t)^gamma log(p_t)``.
    """
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def quality_focal_loss(logits: Tensor, soft_targets: Tensor, beta: float = 2.0) -> Tensor:
    """Quality focal loss (GFL, Li et al. 2020), as mmdet's ``QualityFocalLoss(use_sigmoid=True)``.

    For a negative entry (target 0) the loss is ``BCE(x, 0) * sigmoid(x)^beta``; for the positive
    entry of a row it is ``BCE(x, s) * |s - sigmoid(x)|^beta`` with ``s`` the quality score (IoU).
    Both are ``BCE(x, t) * |t - sigmoid(x)|^beta`` with dense soft targets ``t``. As in mmdet the
    modulating factor is not detached.

    Args:
        logits: (..., C) raw scores.
        soft_targets: (..., C) targets in [0, 1]: the quality score at the labelled class of a
            positive, 0 elsewhere (all-zero rows for background).
        beta: modulating exponent.
    Returns:
        (..., C) fp32 loss.
    """
    logits, soft_targets = logits.float(), soft_targets.float()
    ce = F.binary_cross_entropy_with_logits(logits, soft_targets, reduction="none")
    return ce * (soft_targets - logits.sigmoid()).abs().pow(beta)


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """(..., 4), (..., 4) -> (..., 4) fp32 absolute differences."""
    return (pred.float() - target.float()).abs()


def giou_loss(pred_xyxy: Tensor, target_xyxy: Tensor) -> Tensor:
    """(..., 4), (..., 4) xyxy -> (...) fp32 ``1 - GIoU``."""
    return 1 - elementwise_generalized_box_iou(pred_xyxy.float(), target_xyxy.float())


def normalized_sum(loss: Tensor, normalizer: Union[Tensor, float]) -> Tensor:
    """Sum of all elements of ``loss`` divided by ``normalizer`` (a scalar, already clamped)."""
    return loss.sum() / normalizer


def reduce_num_boxes(count: Union[int, float, Tensor], device: torch.device) -> Tensor:
    """Average of ``count`` over all workers (all-reduce / world size), clamped to >= 1.

    The loss normaliser of the DETR criteria and the dense heads: the mean number of target boxes
    (or positives, or sum of quality targets) per worker. Every worker must call it the same
    number of times (a collective). Returns a 0-dim fp32 tensor on ``device``.
    """
    count = torch.as_tensor(count, dtype=torch.float32, device=device)
    world_size = comm.get_world_size()
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / world_size
    return count.clamp(min=1.0)
