"""Hungarian matching between DETR queries and ground-truth boxes (DETR / Deformable-DETR / DINO).

Targets follow the DETR convention used throughout codetr: per image a dict with
``"labels"`` (G,) int64 in [0, num_classes) and ``"boxes"`` (G, 4) normalised cxcywh.
"""
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from codetr.layers.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

__all__ = ["CLASS_COSTS", "HungarianMatcher", "L1_BOX_FORMATS", "focal_class_cost", "l1_boxes", "softmax_class_cost"]

L1_BOX_FORMATS = ("cxcywh", "xyxy")
CLASS_COSTS = ("focal", "softmax")


def check_l1_box_format(owner: str, box_format: str) -> None:
    if box_format not in L1_BOX_FORMATS:
        raise ValueError(f"{owner}: l1_box_format={box_format!r}; expected one of {L1_BOX_FORMATS}")


def l1_boxes(boxes: Tensor, box_format: str) -> Tensor:
    """(..., 4) normalised cxcywh -> the coordinates an L1 cost / loss compares: the same
    ("cxcywh") or the corners ("xyxy")."""
    return boxes if box_format == "cxcywh" else box_cxcywh_to_xyxy(boxes)


def focal_class_cost(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal-loss classification cost (Deformable-DETR / DINO).

    ``cost[q, g] = alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log(1 - p))`` with
    ``p = sigmoid(logits[q, labels[g]])``: the focal loss of calling q positive for class
    labels[g] minus that of calling it negative.

    Args:
        logits: (Q, C) raw scores. labels: (G,) int64.
    Returns:
        (Q, G) cost.
    """
    logits = logits[:, labels]
    prob = logits.sigmoid()
    pos = alpha * (1 - prob) ** gamma * (-F.logsigmoid(logits))
    neg = (1 - alpha) * prob**gamma * (-F.logsigmoid(-logits))
    return pos - neg


def softmax_class_cost(logits: Tensor, labels: Tensor) -> Tensor:
    """DETR's classification cost ``-p[q, labels[g]]``, ``p = softmax(logits[q])`` over the K
    classes and the last, "no object" column (``1 - p`` up to a constant, which does not change
    the assignment).

    Args:
        logits: (Q, K + 1) raw scores. labels: (G,) int64 in [0, K).
    Returns:
        (Q, G) cost.
    """
    return -logits.softmax(-1)[:, labels]


class HungarianMatcher(nn.Module):
    """Optimal one-to-one assignment of queries to targets, per image.

    The cost is ``cost_class * class cost + cost_bbox * L1 + cost_giou * (-GIoU)``; the class
    cost is ``class_cost``: "focal" (``focal_class_cost``: Deformable-DETR, DINO; sigmoid logits
    (Q, K)) or "softmax" (``softmax_class_cost``: DETR; logits (Q, K + 1) with "no object"
    last). The L1
    between the normalised boxes as ``l1_box_format``: "cxcywh" (DETR, DINO) or "xyxy" (the
    corners: AdaMixer / DEQDet, mmdet's ``BBoxL1Cost(box_format="xyxy")``); the assignment is
    exact (scipy's ``linear_sum_assignment``). Costs are computed in fp32 with autocast disabled.
    Every target is matched when Q >= G (always so for DETR models). A cost matrix with a NaN or
    infinite entry (a diverged model: non-finite predictions) raises ``FloatingPointError``
    naming what is not finite, before the assignment (scipy would fail with "matrix contains
    invalid numeric entries"); the check runs on the copy scipy reads, so it costs no device
    synchronisation.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        l1_box_format: str = "cxcywh",
        class_cost: str = "focal",
    ):
        super().__init__()
        if class_cost not in CLASS_COSTS:
            raise ValueError(f"HungarianMatcher: class_cost={class_cost!r}; expected one of {CLASS_COSTS}")
        self.class_cost = class_cost
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0; expected at least one positive cost")
        check_l1_box_format("HungarianMatcher", l1_box_format)
        self.l1_box_format = l1_box_format
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.alpha = alpha
        self.gamma = gamma

    def cost_matrix(self, logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor) -> Tensor:
        """Matching cost of one image.

        Args:
            logits: (Q, C) (C = K + 1 with ``class_cost="softmax"``); boxes: (Q, 4) normalised cxcywh;
            tgt_labels: (G,) int64; tgt_boxes: (G, 4) normalised cxcywh.
        Returns:
            (Q, G) fp32 cost.
        """
        logits, boxes, tgt_boxes = logits.float(), boxes.float(), tgt_boxes.float()
        cost = self.cost_bbox * torch.cdist(l1_boxes(boxes, self.l1_box_format),
                                            l1_boxes(tgt_boxes, self.l1_box_format), p=1)
        if self.class_cost == "softmax":
            class_cost = softmax_class_cost(logits, tgt_labels)
        else:
            class_cost = focal_class_cost(logits, tgt_labels, self.alpha, self.gamma)
        cost = cost + self.cost_class * class_cost
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(
        self, pred_logits: Tensor, pred_boxes: Tensor, targets: List[Dict[str, Tensor]]
    ) -> List[Tuple[Tensor, Tensor]]:
        """Match every image of the batch.

        Args:
            pred_logits: (B, Q, C) raw class scores.
            pred_boxes: (B, Q, 4) normalised cxcywh (after sigmoid).
            targets: B dicts with "labels" (G_b,) and "boxes" (G_b, 4) normalised cxcywh.
        Returns:
            B pairs ``(query_idx, target_idx)`` of int64 tensors on the device of the predictions,
            each of length min(Q, G_b), sorted by query index.
        """
        device = pred_logits.device
        with torch.autocast(device_type=device.type, enabled=False):
            return [
                self._match_one(pred_logits[b], pred_boxes[b], t["labels"], t["boxes"])
                for b, t in enumerate(targets)
            ]

    def _match_one(
        self, logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor
    ) -> Tuple[Tensor, Tensor]:
        device = logits.device
        if logits.shape[0] == 0 or tgt_labels.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64, device=device)
            return empty, empty.clone()
        cost = self.cost_matrix(logits, boxes, tgt_labels, tgt_boxes).cpu().numpy()
        if not np.isfinite(cost).all():
            raise FloatingPointError(_non_finite_cost_message(cost, logits, boxes, tgt_boxes))
        rows, cols = linear_sum_assignment(cost)
        return (
            torch.as_tensor(rows, dtype=torch.int64, device=device),
            torch.as_tensor(cols, dtype=torch.int64, device=device),
        )


def _non_finite_cost_message(cost: np.ndarray, logits: Tensor, boxes: Tensor, tgt_boxes: Tensor) -> str:
    def bad(t: Tensor) -> int:
        return int((~torch.isfinite(t.float())).sum())

    return (
        f"HungarianMatcher: the matching cost ({cost.shape[0]} queries x {cost.shape[1]} targets) has "
        f"{int((~np.isfinite(cost)).sum())} non-finite (NaN / inf) entries; non-finite values in the predicted "
        f"logits: {bad(logits)} of {logits.numel()}, predicted boxes: {bad(boxes)} of {boxes.numel()}, target "
        f"boxes: {bad(tgt_boxes)} of {tgt_boxes.numel()}. The training diverged (e.g. a too large optimizer.lr; "
        "gradient clipping: train.clip_grad.enabled=True) or the inputs are not finite."
    )
