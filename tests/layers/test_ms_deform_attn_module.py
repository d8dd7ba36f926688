"""MSDeformAttn: initialisation, reference-point conventions, padding mask, dtypes."""
import math

import pytest
import torch

from codetr.layers import MSDeformAttn, ms_deform_attn_reference

from ms_deform_attn_cases import level_metadata

SHAPES = [(6, 8), (3, 4), (2, 2)]


def _module(**kw):
    torch.manual_seed(0)
    m = MSDeformAttn(embed_dim=16, num_heads=4, num_levels=len(SHAPES), num_points=2, **kw).double()
    with torch.no_grad():  # non-trivial offsets and weights (the default init zeroes their weights)
        m.sampling_offsets.weight.normal_(0, 0.1)
        m.attention_weights.weight.normal_(0, 0.1)
    return m


def _inputs(N=2, Q=5, ref_dim=2):
    spatial_shapes, starts, S = level_metadata(SHAPES)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(N, Q, 16, generator=g, dtype=torch.float64)
    value = torch.randn(N, S, 16, generator=g, dtype=torch.float64)
    if ref_dim == 2:
        ref = torch.rand(N, Q, len(SHAPES), 2, generator=g, dtype=torch.float64)
    else:
        ref = torch.cat([torch.rand(N, Q, 1, 2, generator=g), 0.05 + 0.3 * torch.rand(N, Q, 1, 2, generator=g)], -1)
        ref = ref.double().expand(N, Q, len(SHAPES), 4)
    return query, ref, value, spatial_shapes, starts


def _expected(m, query, locations_fn, value, spatial_shapes, starts, mask=None):
    """Independent statement of the module: projections, softmax over L*P, then the reference op."""
    N, Q, C = query.shape
    M, L, P = m.num_heads, m.num_levels, m.num_points
    v = value @ m.value_proj.weight.T + m.value_proj.bias
    if mask is not None:
        v = v * (~mask)[..., None]
    offsets = (query @ m.sampling_offsets.weight.T + m.sampling_offsets.bias).view(N, Q, M, L, P, 2)
    logits = (query @ m.attention_weights.weight.T + m.attention_weights.bias).view(N, Q, M, L * P)
    weights = torch.exp(logits - logits.logsumexp(-1, keepdim=True)).view(N, Q, M, L, P)
    out = ms_deform_attn_reference(v.view(N, -1, M, C // M), spatial_shapes, starts, locations_fn(offsets), weights)
    return out @ m.output_proj.weight.T + m.output_proj.bias


def test_directional_grid_initialisation():
    m = MSDeformAttn(embed_dim=32, num_heads=8, num_levels=2, num_points=3)
    bias = m.sampling_offsets.bias.view(8, 2, 3, 2)
    # head h points along angle 2*pi*h/8, scaled so the larger coordinate is 1; point p at p + 1
    expected_dirs = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    for h, (dx, dy) in enumerate(expected_dirs):
        for p in range(3):
            for lvl in range(2):
                torch.testing.assert_close(bias[h, lvl, p], torch.tensor([dx, dy], dtype=torch.float32) * (p + 1),
                                           atol=1e-5, rtol=0)
    assert torch.count_nonzero(m.sampling_offsets.weight) == 0
    assert torch.count_nonzero(m.attention_weights.weight) == 0 and torch.count_nonzero(m.attention_weights.bias) == 0


def test_output_shape():
    m = _module()
    query, ref, value, spatial_shapes, starts = _inputs(N=3, Q=7)
    assert m(query, ref, value, spatial_shapes, starts).shape == (3, 7, 16)


def test_point_references_offsets_in_pixels_of_each_level():
    m = _module()
    query, ref, value, spatial_shapes, starts = _inputs()
    wh = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float64)  # (L, 2) as (W, H)

    def locations(offsets):  # offsets (N, Q, M, L, P, 2) in pixels of level l
        return ref[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]

    got = m(query, ref, value, spatial_shapes, starts)
    torch.testing.assert_close(got, _expected(m, query, locations, value, spatial_shapes, starts))


def test_box_references_offsets_scaled_by_half_box_over_points():
    m = _module()
    query, ref, value, spatial_shapes, starts = _inputs(ref_dim=4)
    P = m.num_points

    def locations(offsets):
        centre, size = ref[:, :, None, :, None, :2], ref[:, :, None, :, None, 2:]
        return centre + offsets / P * size * 0.5

    got = m(query, ref, value, spatial_shapes, starts)
    torch.testing.assert_close(got, _expected(m, query, locations, value, spatial_shapes, starts))


def test_padding_mask_removes_padded_values():
    m = _module()
    query, ref, value, spatial_shapes, starts = _inputs()
    mask = torch.zeros(value.shape[:2], dtype=torch.bool)
    mask[0, 10:30] = True
    mask[1, -4:] = True
    out = m(query, ref, value, spatial_shapes, starts, key_padding_mask=mask)
    changed = value.clone()
    changed[mask] = 1e3 * torch.randn_like(changed[mask])
    torch.testing.assert_close(m(query, ref, changed, spatial_shapes, starts, key_padding_mask=mask), out)
    # without the mask those values do matter
    assert not torch.allclose(m(query, ref, changed, spatial_shapes, starts), out)


def test_reference_op_switch_gives_the_same_result():
    m = _module()
    query, ref, value, spatial_shapes, starts = _inputs()
    out = m(query, ref, value, spatial_shapes, starts)
    m.use_reference_op = True
    torch.testing.assert_close(m(query, ref, value, spatial_shapes, starts), out)


def test_bfloat16_autocast_matches_float32():
    m = _module().float()
    query, ref, value, spatial_shapes, starts = (t.float() if t.is_floating_point() else t for t in _inputs())
    want = m(query, ref, value, spatial_shapes, starts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(query, ref, value, spatial_shapes, starts)
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(embed_dim=10, num_heads=4), "divisible"), ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSDeformAttn(**kwargs)


def test_bad_reference_points_shape():
    m = _module()
    query, ref, value, spatial_shapes, starts = _inputs()
    with pytest.raises(ValueError, match="reference_points"):
        m(query, ref[..., :1], value, spatial_shapes, starts)
    with pytest.raises(ValueError, match="levels"):
        m(query, ref, value, spatial_shapes[:2], starts[:2])
