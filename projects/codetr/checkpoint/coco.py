"""COCO class order: the 91-way "category id" heads of DETR-style releases vs the 80
contiguous classes of Detectron2's COCO metadata.

DETR and the DINO repository train COCO with ``num_classes=91`` and use the COCO category id
(1..90, with 11 ids unused) directly as the class index. Detectron2 (and this project) number
the 80 categories 0..79 in increasing id order (``thing_dataset_id_to_contiguous_id``). A class
head converts by taking row ``COCO_THING_IDS[c]`` for contiguous class ``c``; so does a label
embedding indexed by the same labels (DINO's ``label_enc``, 92 rows with ``dn_labelbook_size=91``).
"""
from __future__ import annotations

from torch import Tensor

from .core import ShapeMismatchError

__all__ = ["COCO_THING_IDS", "coco91_to_80", "coco92_to_81"]

# The 80 COCO 2017 category ids, in increasing order = Detectron2's contiguous order.
COCO_THING_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
assert len(COCO_THING_IDS) == 80


def coco91_to_80(value: Tensor, key: str = "<tensor>", min_rows: int = 91) -> Tensor:
    """Rows ``COCO_THING_IDS`` of ``value`` (dim 0 indexed by COCO category id): a (91, C)
    weight or (91,) bias becomes (80, C) / (80,). Fewer than ``min_rows`` rows is a
    ``ShapeMismatchError`` naming ``key``."""
    if value.dim() == 0 or value.shape[0] < min_rows:
        raise ShapeMismatchError(
            f"{key!r}: expected a COCO category-id indexed tensor with >= {min_rows} rows, got shape "
            f"{tuple(value.shape)}",
            [key],
        )
    return value[list(COCO_THING_IDS)].clone()


def coco92_to_81(value: Tensor, key: str = "<tensor>") -> Tensor:
    """A tensor of 92 rows, the 91 COCO category ids then one extra row (DETR's "no object"
    logit, DN-DETR's "unknown" label embedding) -> 81 rows: ``COCO_THING_IDS`` then row 91.
    Another row count is a ``ShapeMismatchError`` naming ``key``."""
    if value.dim() == 0 or value.shape[0] != 92:
        raise ShapeMismatchError(
            f"{key!r}: expected 92 rows (91 COCO category ids + 1), got shape {tuple(value.shape)}", [key]
        )
    return value[list(COCO_THING_IDS) + [91]].clone()
