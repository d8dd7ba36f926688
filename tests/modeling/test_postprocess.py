"""``codetr.modeling.postprocess``: clamping boxes to the image, and rescaling detections to the
output size either through Detectron2's ``detector_postprocess`` (clip, drop empty boxes) or
keeping every detection as the official codes do; hand-built boxes beyond the border and boxes
empty after clipping."""
import torch
from detectron2.structures import Boxes, Instances

from codetr.modeling.postprocess import clip_boxes, rescale_detections


def detections():
    """A 40 x 50 (h, w) image: a box inside, one crossing the right/bottom border, one entirely
    left of the image (empty once clipped), one crossing the top-left corner."""
    r = Instances((40, 50))
    r.pred_boxes = Boxes(torch.tensor([
        [10.0, 5.0, 30.0, 20.0],
        [40.0, 30.0, 70.0, 55.0],
        [-20.0, 10.0, -5.0, 30.0],
        [-4.0, -6.0, 12.0, 8.0],
    ]))
    r.scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    r.pred_classes = torch.tensor([0, 1, 2, 1])
    return r


def test_clip_boxes_clamps_each_coordinate_to_the_frame():
    boxes = detections().pred_boxes.tensor
    clipped = clip_boxes(boxes, 40, 50)
    expected = torch.tensor([[10.0, 5.0, 30.0, 20.0], [40.0, 30.0, 50.0, 40.0], [0.0, 10.0, 0.0, 30.0],
                             [0.0, 0.0, 12.0, 8.0]])
    assert torch.equal(clipped, expected)
    assert boxes[1, 2] == 70.0  # a new tensor: the input is unchanged


def test_keeping_every_detection_only_scales_the_boxes():
    r = detections()
    out = rescale_detections(r, 80, 150, detectron2_postprocess=False)  # x3 in width, x2 in height
    assert out.image_size == (80, 150)
    expected = r.pred_boxes.tensor * torch.tensor([3.0, 2.0, 3.0, 2.0])
    assert torch.equal(out.pred_boxes.tensor, expected)  # beyond the border, empty once clipped: all kept
    assert torch.equal(out.scores, r.scores) and torch.equal(out.pred_classes, r.pred_classes)
    assert r.pred_boxes.tensor[1, 2] == 70.0  # the input detections are not modified


def test_detectron2_postprocess_clips_and_drops_empty_boxes():
    out = rescale_detections(detections(), 80, 150, detectron2_postprocess=True)
    assert out.image_size == (80, 150)
    # the box left of the image is empty after clipping and goes; the others are clipped at 150 x 80
    expected = torch.tensor([[30.0, 10.0, 90.0, 40.0], [120.0, 60.0, 150.0, 80.0], [0.0, 0.0, 36.0, 16.0]])
    torch.testing.assert_close(out.pred_boxes.tensor, expected)
    assert torch.equal(out.scores, torch.tensor([0.9, 0.8, 0.6]))
    assert out.pred_classes.tolist() == [0, 1, 1]
