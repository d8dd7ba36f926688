"""An independent reference for the DETR-family losses (written from the formulas, in plain Python
floats), and the hand-made ground truths the criterion tests use."""
import math

import torch


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def focal(x, t, alpha=0.25, gamma=2.0):
    """The sigmoid focal loss of logit ``x`` for target ``t`` (True: positive)."""
    p = sigmoid(x)
    return -alpha * (1 - p) ** gamma * math.log(p) if t else -(1 - alpha) * p**gamma * math.log(1 - p)


def qfl(x, score, beta=2.0):
    """The quality focal loss of logit ``x`` for the soft target ``score``."""
    p = sigmoid(x)
    return -(score * math.log(p) + (1 - score) * math.log(1 - p)) * abs(score - p) ** beta


def corners(b):
    """cxcywh -> x0, y0, x1, y1."""
    cx, cy, w, h = b
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def iou_giou(a, b):
    """(IoU, GIoU) of two cxcywh boxes."""
    a, b = corners(a), corners(b)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    enclosing = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union, inter / union - (enclosing - union) / enclosing


def expected_losses(logits, boxes, assignment, normalizer, class_loss="focal", l1_corners=False):
    """assignment: {(b, q): (label, box)} for positives, {(b, q): None} for negatives; other
    slots are ignored (padding). Returns the weighted losses (class 1, bbox 5, giou 2)."""
    cls = l1 = giou_l = 0.0
    for (b, q), target in assignment.items():
        x = logits[b][q]
        for c in range(len(x)):
            positive = target is not None and target[0] == c
            if class_loss == "focal":
                cls += focal(x[c], positive)
            else:
                score = iou_giou(boxes[b][q], target[1])[0] if positive else 0.0
                cls += qfl(x[c], score)
        if target is not None:
            pred_l1, tgt_l1 = (corners(boxes[b][q]), corners(target[1])) if l1_corners else (boxes[b][q], target[1])
            l1 += sum(abs(p - t) for p, t in zip(pred_l1, tgt_l1))
            giou_l += 1 - iou_giou(boxes[b][q], target[1])[1]
    return {"loss_class": cls / normalizer, "loss_bbox": 5 * l1 / normalizer, "loss_giou": 2 * giou_l / normalizer}


# two images: labels 2 and 0 (image 0), label 1 (image 1); normalised cxcywh boxes
GT = [
    {"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
    {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
]
