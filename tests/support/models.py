"""Tiny model parts and inputs shared by the detector tests."""
from typing import Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.structures import Boxes, Instances

RES3_RES5 = (3, 4, 5)
RES2_RES5 = (2, 3, 4, 5)


class PatchBackbone(Backbone):
    """Non-overlapping strided convs: a position's features depend only on its own pixels, so
    features of an image do not depend on its padding (unlike a ResNet's border convs). No
    normalisation layer.

    ``levels``: the outputs ``res{i}`` (stride 2^i) for i in ``levels`` (consecutive): the first is a
    2^i x 2^i patch conv of the image, each next one a 2 x 2 patch conv of the previous
    (``RES3_RES5``, the default: res3..res5; ``RES2_RES5``: res2..res5)."""

    def __init__(self, c: int = 16, levels: Sequence[int] = RES3_RES5):
        super().__init__()
        self.levels = tuple(levels)
        first = self.levels[0]
        setattr(self, f"res{first}", torch.nn.Conv2d(3, c, 2**first, 2**first))
        for i in self.levels[1:]:
            setattr(self, f"res{i}", torch.nn.Conv2d(c, c, 2, 2))
        self.c = c

    def forward(self, x):
        out = {}
        for i in self.levels:
            x = getattr(self, f"res{i}")(x).relu()
            out[f"res{i}"] = x
        return out

    def output_shape(self):
        return {f"res{i}": ShapeSpec(channels=self.c, stride=2**i) for i in self.levels}


def make_input(h, w, boxes=(), labels=(), seed=0, orig=None):
    """A Detectron2 training / inference input: a random (3, h, w) uint8 image with each box drawn
    at 255 in its class' channel (so that it can be learned), its Instances (boxes xyxy in the
    image), and "height" / "width" (``orig``, default (h, w))."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(labels, dtype=torch.int64)
    for (x0, y0, x1, y1), c in zip(boxes, labels):  # draw the objects so that they can be learned
        image[c, int(y0):int(y1), int(x0):int(x1)] = 255
    oh, ow = orig or (h, w)
    return {"image": image, "instances": inst, "height": oh, "width": ow}


BATCH = [
    make_input(64, 64, [(8, 8, 40, 30), (30, 35, 60, 60)], [0, 2], seed=1),
    make_input(64, 128, [(70, 10, 120, 50)], [1], seed=2),
]
