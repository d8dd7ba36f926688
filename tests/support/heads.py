"""Inputs of the dense / auxiliary head tests: a padded two-image batch with a random pyramid."""
import math

import torch
from detectron2.structures import Boxes, ImageList, Instances


def pyramid_batch(names=("p3", "p4", "p5"), strides=(8, 16, 32), channels=16):
    """Two images (64 x 96 and 48 x 64 in a 64 x 96 batch), a random ``channels``-channel pyramid
    on the levels ``names`` / ``strides`` (torch seeded with 1 first), three ground truths."""
    torch.manual_seed(1)
    images = ImageList(torch.zeros(2, 3, 64, 96), [(64, 96), (48, 64)])
    feats = {n: torch.randn(2, channels, math.ceil(64 / s), math.ceil(96 / s)) for n, s in zip(names, strides)}
    gts = []
    cases = (((64, 96), [[10, 8, 50, 40], [60, 20, 90, 60]], [0, 2]), ((48, 64), [[5, 5, 30, 40]], [1]))
    for size, boxes, labels in cases:
        inst = Instances(size)
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(labels)
        gts.append(inst)
    return images, feats, gts
