import pytest
import torch
import torchvision

from codetr.layers.box_ops import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    elementwise_box_iou,
    elementwise_generalized_box_iou,
    generalized_box_iou,
    inverse_sigmoid,
)


def random_xyxy(n, generator=None):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.5 + 0.01
    return torch.cat([xy, xy + wh], dim=1)


def test_conversions_hand_computed():
    cxcywh = torch.tensor([[0.5, 0.4, 0.2, 0.6]])
    xyxy = torch.tensor([[0.4, 0.1, 0.6, 0.7]])
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), xyxy)
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), cxcywh)


def test_conversions_match_torchvision_and_round_trip():
    g = torch.Generator().manual_seed(0)
    xyxy = random_xyxy(50, g).view(5, 10, 4)
    expected = torchvision.ops.box_convert(xyxy.view(-1, 4), "xyxy", "cxcywh").view(5, 10, 4)
    torch.testing.assert_close(box_xyxy_to_cxcywh(xyxy), expected)
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(xyxy)), xyxy)


def test_iou_and_giou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    # intersection 1, union 4 + 4 - 1 = 7, enclosing 9
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7]]))
    torch.testing.assert_close(generalized_box_iou(a, b), torch.tensor([[1 / 7 - (9 - 7) / 9]]))
    # disjoint 1x1 boxes: IoU 0, enclosing 4x4 = 16, union 2, GIoU = -(16 - 2) / 16
    c = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    d = torch.tensor([[3.0, 3.0, 4.0, 4.0]])
    torch.testing.assert_close(elementwise_box_iou(c, d), torch.tensor([0.0]))
    torch.testing.assert_close(elementwise_generalized_box_iou(c, d), torch.tensor([-(16 - 2) / 16]))
    torch.testing.assert_close(box_area(a), torch.tensor([4.0]))


TOL = dict(rtol=1e-5, atol=1e-5)  # our overlaps add eps=1e-7 to denominators


def test_pairwise_matches_torchvision():
    g = torch.Generator().manual_seed(1)
    a, b = random_xyxy(7, g), random_xyxy(5, g)
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b), **TOL)
    torch.testing.assert_close(generalized_box_iou(a, b), torchvision.ops.generalized_box_iou(a, b), **TOL)


def test_elementwise_is_pairwise_diagonal():
    g = torch.Generator().manual_seed(2)
    a, b = random_xyxy(6, g), random_xyxy(6, g)
    torch.testing.assert_close(elementwise_box_iou(a, b), torchvision.ops.box_iou(a, b).diagonal(), **TOL)
    torch.testing.assert_close(
        elementwise_generalized_box_iou(a, b), torchvision.ops.generalized_box_iou(a, b).diagonal(), **TOL
    )


def test_identical_boxes_and_degenerate_boxes():
    a = torch.tensor([[0.1, 0.2, 0.5, 0.9]])
    torch.testing.assert_close(elementwise_generalized_box_iou(a, a), torch.tensor([1.0]))
    zero = torch.tensor([[0.3, 0.3, 0.3, 0.3]])
    out = elementwise_generalized_box_iou(zero, zero)
    assert torch.isfinite(out).all()


def test_inverse_sigmoid():
    x = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(inverse_sigmoid(x).sigmoid(), x)
    torch.testing.assert_close(inverse_sigmoid(torch.tensor([0.5])), torch.tensor([0.0]))
    # clamped at the ends: finite, +-log((1 - eps) / eps)
    ends = inverse_sigmoid(torch.tensor([0.0, 1.0]), eps=1e-3)
    expected = torch.log(torch.tensor(1 / 1e-3))
    torch.testing.assert_close(ends, torch.stack([-expected, expected]), rtol=0, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(dtype):
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=dtype)
    assert box_iou(a, a).dtype == dtype
    assert generalized_box_iou(a, a).dtype == dtype
