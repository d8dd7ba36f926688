"""What an auxiliary head hands to Co-DETR: the samples its own label assignment chose.

Dense heads (ATSS, T-Head, ``codetr.modeling.heads.dense``) and the Faster R-CNN wrapper take a
feature pyramid and return their losses and, when asked, an ``AssignedSamples``: per image, the
positive anchors / points / proposals with their assigned ground truth, negatives (used to pad
Co-DETR's groups of customized positive queries) and, optionally, a feature per sample
(Co-Deformable-DETR adds it to its positive queries). Boxes are absolute xyxy in the (resized,
unpadded) input image.
"""
from dataclasses import dataclass
from typing import List, Optional

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
        pos_feats, neg_feats: optional (P_i, C) / (R_i, C) feature of each sample (both or
            neither): the pyramid feature at an anchor, or a mean-pooled RoI feature.
    """

    pos_boxes: List[Tensor]
    pos_labels: List[Tensor]
    pos_targets: List[Tensor]
    neg_boxes: List[Tensor]
    pos_feats: Optional[List[Tensor]] = None
    neg_feats: Optional[List[Tensor]] = None

    def __post_init__(self):
        n = len(self.pos_boxes)
        if not (len(self.pos_labels) == len(self.pos_targets) == len(self.neg_boxes) == n):
            raise ValueError(
                "AssignedSamples: every field needs one entry per image, got "
                f"{len(self.pos_boxes)}, {len(self.pos_labels)}, {len(self.pos_targets)}, {len(self.neg_boxes)}"
            )
        if (self.pos_feats is None) != (self.neg_feats is None):
            raise ValueError("AssignedSamples: give both pos_feats and neg_feats, or neither")
        if self.pos_feats is not None and not (len(self.pos_feats) == len(self.neg_feats) == n):
            raise ValueError(
                f"AssignedSamples: pos_feats / neg_feats need one entry per image ({n}), got "
                f"{len(self.pos_feats)}, {len(self.neg_feats)}"
            )

    @property
    def has_features(self) -> bool:
        return self.pos_feats is not None
