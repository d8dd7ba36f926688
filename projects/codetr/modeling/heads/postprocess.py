"""Inference shared by the dense heads (ATSS, T-Head): per-level candidate selection + class-wise NMS."""
from typing import Callable, Iterable, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor

from codetr.layers.nms import batched_nms

__all__ = ["dense_detections"]


def dense_detections(
    image_size: Tuple[int, int],
    levels: Iterable[Tuple[Tensor, Callable[[Tensor], Tensor]]],
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    detections_per_image: int,
) -> Instances:
    """Detections of one image.

    Args:
        image_size: (h, w) of the resized image; boxes are clipped to it.
        levels: per pyramid level, ``(scores, boxes_of)``: scores (A_l, K) probabilities and a
            function from anchor indices (n,) to their boxes (n, 4) xyxy_abs (decoded lazily,
            only for the kept candidates).
        score_thresh, topk_candidates: per level, the top ``topk_candidates`` (anchor, class)
            pairs with score above ``score_thresh``.
        nms_thresh, detections_per_image: class-wise NMS, then the best detections.
    """
    boxes_all, scores_all, classes_all = [], [], []
    for scores, boxes_of in levels:
        num_classes = scores.shape[1]
        scores = scores.flatten()
        keep = scores > score_thresh
        scores, idx = scores[keep], keep.nonzero()[:, 0]
        scores, order = scores.topk(min(topk_candidates, scores.numel()))
        idx = idx[order]
        boxes_all.append(boxes_of(idx // num_classes))
        scores_all.append(scores)
        classes_all.append(idx % num_classes)
    boxes = Boxes(torch.cat(boxes_all))
    boxes.clip(image_size)
    scores, classes = torch.cat(scores_all), torch.cat(classes_all)
    keep = batched_nms(boxes.tensor, scores, classes, nms_thresh)[:detections_per_image]
    result = Instances(image_size)
    result.pred_boxes, result.scores, result.pred_classes = boxes[keep], scores[keep], classes[keep]
    return result
