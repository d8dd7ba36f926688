"""The tiny one-stage detectors of the tests (TOOD, ATSS; CPU, seconds) and their inputs: a narrow
one-block-per-stage ResNet (the structure of R18) with an FPN p3..p7 of width 16, 4 classes. Both
builders seed torch with 0 first, so a model's weights depend only on its arguments."""
import torch
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock
from detectron2.structures import Boxes, Instances

from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.tood_head import TOODHead
from codetr.modeling.meta_arch import ATSS, TOOD
from codetr.modeling.meta_arch.one_stage import LastLevelP6P7

WIDTH = 16


def tiny_resnet_fpn():
    """A narrow one-block-per-stage ResNet (the structure of R18, small enough for CPU tests:
    widths 8, 16, 32, 64, BatchNorm) and an FPN on res3..res5 with P6 / P7 on P5 (width ``WIDTH``),
    built from torch's global generator (the callers seed it)."""
    stages = [
        ResNet.make_stage(BasicBlock, 1, stride_per_block=[s], in_channels=i, out_channels=o, norm="BN")
        for s, i, o in ((1, 8, 8), (2, 8, 16), (2, 16, 32), (2, 32, 64))
    ]
    bottom_up = ResNet(BasicStem(3, 8, norm="BN"), stages, out_features=["res3", "res4", "res5"])
    return FPN(bottom_up, ["res3", "res4", "res5"], WIDTH, top_block=LastLevelP6P7(WIDTH, WIDTH, "p5"))


def tiny_tood(initial_epochs=1, epochs=12, max_iter=36, **head_kw):
    """TOOD: ``tiny_resnet_fpn`` and a TOOD head (2 stacked convs, anchor scale 4), ATSS
    assignment for the first ``initial_epochs`` of ``epochs`` epochs over ``max_iter`` iterations
    (then TAL); the other TOODHead arguments in ``head_kw``."""
    torch.manual_seed(0)
    backbone = tiny_resnet_fpn()
    head = TOODHead(
        num_classes=4, in_features=["p3", "p4", "p5", "p6", "p7"], strides=[8, 16, 32, 64, 128],
        in_channels=WIDTH, feat_channels=WIDTH, stacked_convs=2, num_groups=4, anchor_scale=4,
        initial_epochs=initial_epochs, epochs=epochs, max_iter=max_iter, **head_kw,
    )
    return TOOD(backbone, head)


def tiny_atss(**head_kw):
    """ATSS: ``tiny_resnet_fpn`` and an ATSS head (2 stacked convs, anchor scale 4, score threshold
    0.05 at inference); the other ATSSHead arguments in ``head_kw``."""
    torch.manual_seed(0)
    backbone = tiny_resnet_fpn()
    head = ATSSHead(num_classes=4, in_features=["p3", "p4", "p5", "p6", "p7"], strides=[8, 16, 32, 64, 128],
                    in_channels=WIDTH, feat_channels=WIDTH, stacked_convs=2, num_groups=4, anchor_scale=4,
                    test_score_thresh=0.05, **head_kw)
    return ATSS(backbone, head)


def random_input(h, w, boxes, classes, height=None, width=None, seed=0):
    """A Detectron2 input: a random (3, h, w) uint8 image (the boxes are *not* drawn into it, unlike
    ``support.models.make_input``), its Instances (xyxy ``boxes``, ``classes``), and "height" /
    "width" (default h, w)."""
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), "instances": inst,
            "height": height or h, "width": width or w}


def one_stage_batch():
    """Two images (64 x 80 with classes 0 and 3, 56 x 64 with class 2) of ``random_input``."""
    return [random_input(64, 80, [[4, 6, 40, 50], [30, 20, 76, 60]], [0, 3]),
            random_input(56, 64, [[10, 8, 50, 40]], [2], seed=1)]
