"""Hand-made auxiliary-head samples for the positive-query tests (Co-DETR's customized positive
queries): ``make_samples`` (labels among ``K`` classes) and the image sizes ``SIZES`` they fit."""
import torch

from codetr.modeling.heads.base import AssignedSamples

K = 5
SIZES = [(100, 200), (100, 200)]


def boxes_grid(n, offset=0.0):
    """n distinct xyxy boxes inside a 100 x 200 (h x w) image."""
    i = torch.arange(n, dtype=torch.float32)
    x0 = 2.0 + 3.0 * i + offset
    return torch.stack([x0, 10.0 + i, x0 + 20.0, 40.0 + i], 1)


def make_samples(num_pos, num_neg, feats=False, num_classes=K):
    """AssignedSamples of ``len(num_pos)`` images: ``num_pos[i]`` positives (``boxes_grid``, labels
    0, 1, ... modulo ``num_classes``, targets shifted from the boxes) and ``num_neg[i]`` negatives
    (another grid); with ``feats``, random 6-d features of each (torch's global generator)."""
    pos = [boxes_grid(p) for p in num_pos]
    out = dict(
        pos_boxes=pos,
        pos_labels=[torch.arange(p) % num_classes for p in num_pos],
        pos_targets=[b + torch.tensor([1.0, 1.0, 3.0, 2.0]) for b in pos],
        neg_boxes=[boxes_grid(r, offset=100.0) for r in num_neg],
    )
    if feats:
        out["pos_feats"] = [torch.randn(p, 6) for p in num_pos]
        out["neg_feats"] = [torch.randn(r, 6) for r in num_neg]
    return AssignedSamples(**out)
