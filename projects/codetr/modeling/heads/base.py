"""What a dense auxiliary head hands to Co-DETR: the samples its own label assignment chose.

Dense heads (ATSS, T-Head, the Faster R-CNN wrapper) take a feature pyramid and return their
losses and, when asked, an ``AssignedSamples``: per image, the positive anchors / points /
proposals with their assigned ground truth, and negatives (used to pad Co-DETR's groups of
customized positive queries). Boxes are absolute xyxy in the (resized, unpadded) input image.
"""
from dataclasses import dataclass
from typing import List

from torch import Tensor

__all__ = ["AssignedSamples"]


@dataclass
class AssignedSamples:
    """Per-image lists (length = batch size).

    Attributes:
        pos_boxes: (P_i, 4) xyxy_abs positive anchors / points / proposals.
        pos_labels: (P_i,) int64 class of the assigned ground truth.
        pos_targets: (P_i, 4) xyxy_abs assigned ground-truth boxes.
        neg_boxes: (R_i, 4) xyxy_abs negative samples (classification-only "no object").
    """

    pos_boxes: List[Tensor]
    pos_labels: List[Tensor]
    pos_targets: List[Tensor]
    neg_boxes: List[Tensor]

    def __post_init__(self):
        n = len(self.pos_boxes)
        if not (len(self.pos_labels) == len(self.pos_targets) == len(self.neg_boxes) == n):
            raise ValueError(
                "AssignedSamples: every field needs one entry per image, got "
                f"{len(self.pos_boxes)}, {len(self.pos_labels)}, {len(self.pos_targets)}, {len(self.neg_boxes)}"
            )
