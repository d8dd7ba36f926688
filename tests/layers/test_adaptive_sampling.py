"""Adaptive 3-d sampling (AdaMixer): against an explicit per-point bilinear lookup."""
import math

import pytest
import torch

from codetr.layers.adaptive_sampling import (
    AdaptiveSampling3D,
    adaptive_sampling_3d,
    level_weights,
    sampling_points_3d,
    zero_padding,
)

IMPLS = ["grid_sample", "ms_deform_attn"]


def explicit_lookup(features, strides, points, tau):
    """Loop over every point, level and neighbour: the pixel (i, j) centre of a stride-s level is
    at ((j + 0.5) s, (i + 0.5) s); outside the map the value is 0."""
    n, q, g, p, _ = points.shape
    c = features[0].shape[1]
    d = c // g
    out = torch.zeros(n, q, g, p, d, dtype=features[0].dtype)
    for b in range(n):
        for k in range(q):
            for gi in range(g):
                for pi in range(p):
                    x, y, z = points[b, k, gi, pi].tolist()
                    logits = [-((z - math.log2(s)) ** 2) / tau for s in strides]
                    top = max(logits)
                    ws = [math.exp(v - top) for v in logits]
                    ws = [v / sum(ws) for v in ws]
                    for f, s, wl in zip(features, strides, ws):
                        h, w = f.shape[-2:]
                        fx, fy = x / s - 0.5, y / s - 0.5
                        x0, y0 = math.floor(fx), math.floor(fy)
                        for i, wy in ((y0, 1 - (fy - y0)), (y0 + 1, fy - y0)):
                            for j, wx in ((x0, 1 - (fx - x0)), (x0 + 1, fx - x0)):
                                if 0 <= i < h and 0 <= j < w:
                                    out[b, k, gi, pi] += wl * wy * wx * f[b, gi * d:(gi + 1) * d, i, j]
    return out


def _pyramid(n, c, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, c, h, w, generator=g, dtype=torch.float64) for h, w in sizes]


def test_level_weights_hand_case():
    # z = 3 (8-pixel scale) with strides 4, 8, 16: exponents -1/2, 0, -1/2
    w = level_weights(torch.tensor([3.0], dtype=torch.float64), (4, 8, 16), tau=2.0)
    e = math.exp(-0.5)
    torch.testing.assert_close(w, torch.tensor([[e, 1.0, e]], dtype=torch.float64) / (1 + 2 * e))
    # a very coarse z puts (almost) all weight on the coarsest level
    assert level_weights(torch.tensor([20.0]), (4, 8, 16))[0, -1] > 0.999


def test_sampling_points_scale_offsets_by_the_box():
    # box centre (40, 30), z = 3, r = 2 -> w = 4, h = 16
    xyzr = torch.tensor([[[40.0, 30.0, 3.0, 2.0]]])
    offsets = torch.tensor([0.5, -0.25, -1.0]).view(1, 1, 1, 1, 3)
    pts = sampling_points_3d(xyzr, offsets)
    torch.testing.assert_close(pts, torch.tensor([42.0, 26.0, 2.0]).view(1, 1, 1, 1, 3))


@pytest.mark.parametrize("impl", IMPLS)
def test_random_points_match_the_explicit_lookup(impl):
    strides = (4, 8, 16)
    feats = _pyramid(2, 6, [(8, 10), (4, 5), (2, 3)])
    g = torch.Generator().manual_seed(1)
    n, q, groups, p = 2, 3, 2, 4
    xy = torch.rand(n, q, groups, p, 2, generator=g, dtype=torch.float64) * 56 - 8  # some outside the maps
    z = torch.rand(n, q, groups, p, 1, generator=g, dtype=torch.float64) * 4 + 1.5
    points = torch.cat([xy, z], -1)
    out = adaptive_sampling_3d(feats, strides, points, tau=2.0, impl=impl)
    assert out.shape == (n, q, groups, p, 3)
    torch.testing.assert_close(out, explicit_lookup(feats, strides, points, 2.0))


@pytest.mark.parametrize("impl", IMPLS)
def test_pixel_centres_borders_and_outside(impl):
    strides = (4, 8)
    feats = _pyramid(1, 2, [(4, 4), (2, 2)], seed=3)
    z_only_level0 = -40.0  # all weight on stride 4 (log2 4 = 2 is far closer than 3)
    cases = torch.tensor([
        [6.0, 10.0, z_only_level0],    # centre of pixel (row 2, col 1): exact value
        [0.0, 2.0, z_only_level0],     # left border: half of pixel (0, 0), half zero padding
        [16.0, 14.0, z_only_level0],   # right border at x = W * s
        [-2.0, 2.0, z_only_level0],    # half a pixel outside: nothing
        [100.0, 100.0, 3.0],           # far outside every level
    ], dtype=torch.float64).view(1, 1, 1, 5, 3)
    out = adaptive_sampling_3d(feats, strides, cases, tau=2.0, impl=impl)[0, 0, 0, :, 0]
    f = feats[0][0, 0]
    expected = torch.stack([f[2, 1], 0.5 * f[0, 0], 0.5 * f[3, 3], f.new_zeros(()), f.new_zeros(())])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, explicit_lookup(feats, strides, cases, 2.0)[0, 0, 0, :, 0])


@pytest.mark.parametrize("impl", IMPLS)
def test_groups_read_their_own_channels(impl):
    feats = _pyramid(1, 4, [(3, 3)], seed=4)
    points = torch.tensor([4.0, 4.0, 2.0], dtype=torch.float64).view(1, 1, 1, 1, 3).expand(1, 1, 2, 1, 3)
    out = adaptive_sampling_3d(feats, (8,), points, impl=impl)  # one level: weight 1; pixel (0, 0)
    torch.testing.assert_close(out[0, 0, 0, 0], feats[0][0, :2, 0, 0])
    torch.testing.assert_close(out[0, 0, 1, 0], feats[0][0, 2:, 0, 0])


@pytest.mark.parametrize("impl", IMPLS)
def test_zeroed_padding_makes_batched_equal_single_image(impl):
    """An image alone on its (8, 12)-pixel maps and the same image padded into a larger batch
    read the same values once padded positions are zero."""
    strides = (4, 8)
    small = _pyramid(1, 4, [(2, 3), (1, 2)], seed=5)
    small[1][..., 1:] = 0.0  # that column is padding of the lone image too (12 px = 1.5 stride-8 pixels)
    big = [torch.randn(2, 4, 4, 5, dtype=torch.float64), torch.randn(2, 4, 2, 3, dtype=torch.float64)]
    for f, s in zip(big, small):
        f[1, :, : s.shape[2], : s.shape[3]] = s[0]
    masks = [torch.ones(2, 4, 5, dtype=torch.bool), torch.ones(2, 2, 3, dtype=torch.bool)]
    masks[0][:, :2, :3] = False
    masks[1][:, :1, :1] = False
    masks[0][0] = False
    masks[1][0] = False
    g = torch.Generator().manual_seed(6)
    points = torch.cat([torch.rand(1, 5, 2, 3, 2, generator=g, dtype=torch.float64) * 24 - 4,
                        torch.rand(1, 5, 2, 3, 1, generator=g, dtype=torch.float64) * 2 + 2], -1)
    alone = adaptive_sampling_3d(small, strides, points, impl=impl)
    batched = adaptive_sampling_3d(zero_padding(big, masks), strides, torch.cat([points, points]), impl=impl)
    torch.testing.assert_close(batched[1:], alone)
    # without zeroing, the padding leaks into samples near the image border
    leaky = adaptive_sampling_3d(big, strides, torch.cat([points, points]), impl=impl)
    assert not torch.allclose(leaky[1:], alone)


def test_impls_agree_in_gradients():
    strides = (4, 8, 16)
    g = torch.Generator().manual_seed(7)
    feats = [f.requires_grad_() for f in _pyramid(2, 8, [(6, 7), (3, 4), (2, 2)], seed=8)]
    points = torch.cat([torch.rand(2, 3, 2, 4, 2, generator=g, dtype=torch.float64) * 40 - 4,
                        torch.rand(2, 3, 2, 4, 1, generator=g, dtype=torch.float64) * 3 + 1.5], -1)
    points.requires_grad_()
    grads = []
    for impl in IMPLS:
        out = adaptive_sampling_3d(feats, strides, points, impl=impl)
        grads.append(torch.autograd.grad((out * out.detach().cos()).sum(), [points, *feats]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_module_initialisation_and_forward():
    m = AdaptiveSampling3D(content_dim=8, num_groups=2, num_points=4, strides=(4, 8)).double()
    bias = m.offsets.bias.view(2, 4, 3)
    # 2 x 2 grid of cell centres over [-0.5, 0.5]: +-0.25; point i * 2 + j at (c_i, c_j)
    expected_xy = torch.tensor([[-0.25, -0.25], [-0.25, 0.25], [0.25, -0.25], [0.25, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(bias[0, :, :2], expected_xy)
    torch.testing.assert_close(bias[..., 2], torch.full((2, 4), -1.0, dtype=torch.float64))
    assert not m.offsets.weight.any()
    m3 = AdaptiveSampling3D(content_dim=8, num_groups=2, num_points=3)
    b3 = m3.offsets.bias.view(2, 3, 3)
    assert (b3[..., :2].abs() <= 0.5).all() and (b3[..., 2] == -1).all()

    feats = _pyramid(1, 4, [(8, 8), (4, 4)], seed=9)
    xyzr = torch.tensor([[[12.0, 16.0, 3.0, 0.0]]], dtype=torch.float64)  # 8 x 8 box
    content = torch.randn(1, 1, 8, dtype=torch.float64)
    out = m(feats, content, xyzr)
    # zero weight: the points are the bias grid around the box, at z = 3 - 1
    pts = torch.cat([torch.tensor([12.0, 16.0], dtype=torch.float64) + 8 * expected_xy,
                     torch.full((4, 1), 2.0, dtype=torch.float64)], -1)
    expected = explicit_lookup(feats, (4, 8), pts.view(1, 1, 1, 4, 3).expand(1, 1, 2, 4, 3), 2.0)
    torch.testing.assert_close(out, expected)


def test_errors():
    feats = _pyramid(1, 4, [(2, 2)])
    with pytest.raises(ValueError, match="strides"):
        adaptive_sampling_3d(feats, (4, 8), torch.zeros(1, 1, 2, 1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="divisible"):
        adaptive_sampling_3d(feats, (4,), torch.zeros(1, 1, 3, 1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="impl"):
        adaptive_sampling_3d(feats, (4,), torch.zeros(1, 1, 2, 1, 3, dtype=torch.float64), impl="cuda")


def test_pre_flattened_value_gives_the_same_result():
    strides = (4, 8)
    feats = _pyramid(2, 4, [(4, 6), (2, 3)], seed=10)
    g = torch.Generator().manual_seed(11)
    points = torch.cat([torch.rand(2, 3, 2, 2, 2, generator=g, dtype=torch.float64) * 24,
                        torch.rand(2, 3, 2, 2, 1, generator=g, dtype=torch.float64) + 2], -1)
    flat = torch.cat([f.flatten(2) for f in feats], 2).transpose(1, 2)
    torch.testing.assert_close(adaptive_sampling_3d(feats, strides, points, impl="ms_deform_attn", flat=flat),
                               explicit_lookup(feats, strides, points, 2.0))
    with pytest.raises(ValueError, match="flat"):
        adaptive_sampling_3d(feats, strides, points, impl="ms_deform_attn", flat=flat[:, 1:])
