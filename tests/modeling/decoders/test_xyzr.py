"""xyzr box parametrisation (AdaMixer / DEQDet): hand cases, round trips, refinement, coder."""
import math

import pytest
import torch

from codetr.modeling.coders import (
    XYZRCoder,
    cxcywh_to_xyzr,
    refine_xyzr,
    xyxy_to_xyzr,
    xyzr_to_cxcywh,
    xyzr_to_xyxy,
)


def test_hand_cases():
    # w = 4, h = 16: sqrt(w h) = 8 -> z = 3; h / w = 4 -> r = 2
    xyzr = xyxy_to_xyzr(torch.tensor([[0.0, 0.0, 4.0, 16.0]], dtype=torch.float64))
    torch.testing.assert_close(xyzr, torch.tensor([[2.0, 8.0, 3.0, 2.0]], dtype=torch.float64), atol=1e-6, rtol=0)
    # w = 40, h = 80: z = (log2 40 + log2 80) / 2, r = 1 (taller than wide -> r > 0)
    xyzr = xyxy_to_xyzr(torch.tensor([10.0, 20.0, 50.0, 100.0], dtype=torch.float64))
    expected = torch.tensor([30.0, 60.0, math.log2(math.sqrt(40 * 80)), 1.0], dtype=torch.float64)
    torch.testing.assert_close(xyzr, expected, atol=1e-6, rtol=0)
    # decode: z = 3, r = -2 -> w = 2^(3 + 1) = 16, h = 2^(3 - 1) = 4
    box = xyzr_to_xyxy(torch.tensor([10.0, 20.0, 3.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(box, torch.tensor([2.0, 18.0, 18.0, 22.0], dtype=torch.float64))
    torch.testing.assert_close(
        xyzr_to_cxcywh(torch.tensor([10.0, 20.0, 3.0, -2.0], dtype=torch.float64)),
        torch.tensor([10.0, 20.0, 16.0, 4.0], dtype=torch.float64),
    )


def test_swapped_corners_encode_as_the_same_box():
    a = xyxy_to_xyzr(torch.tensor([0.0, 0.0, 4.0, 16.0]))
    b = xyxy_to_xyzr(torch.tensor([4.0, 16.0, 0.0, 0.0]))
    torch.testing.assert_close(a, b)


def test_round_trips():
    g = torch.Generator().manual_seed(0)
    x1y1 = torch.rand(50, 2, generator=g, dtype=torch.float64) * 500
    wh = torch.rand(50, 2, generator=g, dtype=torch.float64) * 300 + 1
    boxes = torch.cat([x1y1, x1y1 + wh], -1)
    torch.testing.assert_close(xyzr_to_xyxy(xyxy_to_xyzr(boxes)), boxes, atol=1e-4, rtol=0)
    xyzr = torch.cat([torch.rand(50, 2, generator=g, dtype=torch.float64) * 500,
                      torch.rand(50, 1, generator=g, dtype=torch.float64) * 8,
                      torch.randn(50, 1, generator=g, dtype=torch.float64)], -1)
    torch.testing.assert_close(xyxy_to_xyzr(xyzr_to_xyxy(xyzr), eps=0.0), xyzr)
    torch.testing.assert_close(cxcywh_to_xyzr(xyzr_to_cxcywh(xyzr), eps=0.0), xyzr)


def test_refinement_moves_the_centre_in_units_of_the_geometric_mean_side():
    xyzr = torch.tensor([[2.0, 8.0, 3.0, 2.0]])
    delta = torch.tensor([[0.5, -0.25, 1.0, -1.0]])
    # 2^z = 8: x = 2 + 0.5 * 8, y = 8 - 0.25 * 8; z and r are shifted
    torch.testing.assert_close(refine_xyzr(xyzr, delta), torch.tensor([[6.0, 6.0, 4.0, 1.0]]))
    # zero delta keeps the box
    torch.testing.assert_close(refine_xyzr(xyzr, torch.zeros_like(delta)), xyzr)


def test_coder_between_normalised_boxes_and_pixels():
    image_wh = torch.tensor([[100.0, 50.0], [40.0, 80.0]], dtype=torch.float64)
    coder = XYZRCoder().for_images(image_wh)
    whole = torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=torch.float64).expand(2, 3, 4)
    ref = coder.from_boxes(whole)
    assert ref.shape == (2, 3, 4)
    # image 0: centre (50, 25), w = 100, h = 50 -> z = log2(sqrt(5000)), r = -1
    torch.testing.assert_close(
        ref[0, 0], torch.tensor([50.0, 25.0, math.log2(math.sqrt(5000.0)), -1.0], dtype=torch.float64),
        atol=1e-6, rtol=0)
    torch.testing.assert_close(ref[1, 2, :2], torch.tensor([20.0, 40.0], dtype=torch.float64))
    # zero delta decodes to the reference box itself, normalised by each image's size
    torch.testing.assert_close(coder.decode(torch.zeros_like(ref), ref), whole, atol=1e-6, rtol=0)
    # a step of dx = 0.1 moves image 0's centre by 0.1 * sqrt(100 * 50) pixels, i.e. / 100 normalised
    delta = torch.zeros_like(ref)
    delta[..., 0] = 0.1
    boxes = coder.decode(delta, ref)
    torch.testing.assert_close(boxes[0, :, 0], torch.full((3,), 0.5 + 0.1 * math.sqrt(5000.0) / 100,
                                                         dtype=torch.float64))
    torch.testing.assert_close(boxes[1, :, 0], torch.full((3,), 0.5 + 0.1 * math.sqrt(3200.0) / 40,
                                                         dtype=torch.float64))
    torch.testing.assert_close(coder.refine(delta, ref), refine_xyzr(ref, delta))


def test_coder_rejects_bad_image_sizes():
    with pytest.raises(ValueError, match="image_wh"):
        XYZRCoder(torch.ones(3, 2)).from_boxes(torch.rand(2, 3, 4))
    with pytest.raises(ValueError, match="for_images"):  # a coder without sizes cannot cross to pixels
        XYZRCoder().from_boxes(torch.rand(2, 3, 4))
