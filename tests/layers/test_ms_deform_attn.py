"""The compiled op against the plain-PyTorch reference (and the reference against brute force)."""
import math
import subprocess
import sys

import pytest
import torch

from codetr.layers import ms_deform_attn, ms_deform_attn_reference
from codetr.layers.ms_deform_attn import extension_available

from ms_deform_attn_cases import level_metadata, make_inputs

pytestmark = pytest.mark.skipif(not extension_available(), reason="codetr._C is not built")


def _grads(fn, inputs, grad_out):
    value, shapes, starts, loc, attn = inputs
    out = fn(value, shapes, starts, loc, attn)
    return (out, *torch.autograd.grad(out, (value, loc, attn), grad_out))


def _assert_matches_reference(inputs, atol=1e-10, rtol=1e-8):
    ref_out = ms_deform_attn_reference(*inputs)
    grad_out = torch.randn_like(ref_out)
    got = _grads(ms_deform_attn, inputs, grad_out)
    want = _grads(ms_deform_attn_reference, inputs, grad_out)
    for name, a, b in zip(("output", "grad_value", "grad_locations", "grad_weights"), got, want):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def test_reference_equals_brute_force_bilinear():
    """The reference itself, against a direct loop over points and corners (zero padding,
    align_corners=False)."""
    shapes = [(3, 7), (1, 1), (2, 2)]
    value, spatial_shapes, starts, loc, attn = make_inputs(shapes, N=1, M=2, D=3, Q=3, P=2, requires_grad=False)
    out = ms_deform_attn_reference(value, spatial_shapes, starts, loc, attn)
    expected = torch.zeros_like(out)
    for q in range(3):
        for m in range(2):
            acc = torch.zeros(3, dtype=value.dtype)
            for lvl, (H, W) in enumerate(shapes):
                start = int(starts[lvl])
                for p in range(2):
                    x = float(loc[0, q, m, lvl, p, 0]) * W - 0.5
                    y = float(loc[0, q, m, lvl, p, 1]) * H - 0.5
                    x0, y0 = math.floor(x), math.floor(y)
                    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                        if 0 <= yy < H and 0 <= xx < W:
                            weight = (1 - abs(x - xx)) * (1 - abs(y - yy))
                            acc += attn[0, q, m, lvl, p] * weight * value[0, start + yy * W + xx, m]
            expected[0, q, m * 3:(m + 1) * 3] = acc
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    "shapes,P",
    [([(1, 1)], 1), ([(3, 7)], 3), ([(4, 5), (2, 3)], 2), ([(3, 2), (1, 1), (2, 5)], 1)],
)
def test_gradcheck_tiny(shapes, P):
    value, spatial_shapes, starts, loc, attn = make_inputs(shapes, N=2, M=2, D=3, Q=3, P=P)
    assert torch.autograd.gradcheck(
        lambda v, l, a: ms_deform_attn(v, spatial_shapes, starts, l, a), (value, loc, attn), eps=1e-6, atol=1e-5
    )


@pytest.mark.parametrize("seed", range(8))
def test_random_shapes_match_reference(seed):
    g = torch.Generator().manual_seed(100 + seed)
    L = int(torch.randint(1, 6, (1,), generator=g))
    shapes = [tuple(int(s) for s in torch.randint(1, 12, (2,), generator=g)) for _ in range(L)]
    P = int(torch.randint(1, 9, (1,), generator=g))
    M = int(torch.randint(1, 5, (1,), generator=g))
    D = int(torch.randint(1, 40, (1,), generator=g))
    Q = int(torch.randint(1, 50, (1,), generator=g))
    N = int(torch.randint(1, 4, (1,), generator=g))
    _assert_matches_reference(make_inputs(shapes, N=N, M=M, D=D, Q=Q, P=P, seed=seed, loc_low=-0.5, loc_high=1.5))


def test_realistic_shape_matches_reference():
    shapes = [(32, 40), (16, 20), (8, 10), (4, 5)]
    _assert_matches_reference(make_inputs(shapes, N=2, M=8, D=32, Q=300, P=4, loc_low=0.0, loc_high=1.0))


def test_edge_locations():
    """Exactly 0, 1, pixel centres, pixel borders, and far outside the map. On a pixel-grid line
    bilinear sampling has a kink, so the location gradient is one-sided there and depends on
    rounding; it is compared only off those lines."""
    shapes = [(3, 7), (2, 2)]
    value, spatial_shapes, starts, loc, attn = make_inputs(shapes, N=1, M=1, D=5, Q=8, P=2)
    special = torch.tensor([0.0, 1.0, 0.5, 1 / 14, 2 / 7, -1.0, 2.0, 1 / 6], dtype=torch.float64)
    with torch.no_grad():
        loc[0, :, 0, :, 0, 0] = special[:, None]
        loc[0, :, 0, :, 0, 1] = special.flip(0)[:, None]
    ref_out = ms_deform_attn_reference(value, spatial_shapes, starts, loc, attn)
    grad_out = torch.randn_like(ref_out)
    got = _grads(ms_deform_attn, (value, spatial_shapes, starts, loc, attn), grad_out)
    want = _grads(ms_deform_attn_reference, (value, spatial_shapes, starts, loc, attn), grad_out)
    for a, b in zip(got[:2] + got[3:], want[:2] + want[3:]):  # output, grad_value, grad_weights
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    size_xy = spatial_shapes.flip(-1).to(loc.dtype)[None, None, None, :, None, :]  # (W, H) per level
    pixel = loc.detach() * size_xy - 0.5
    off_grid = (pixel - pixel.round()).abs() > 1e-9
    torch.testing.assert_close(got[2][off_grid], want[2][off_grid], atol=1e-10, rtol=1e-8)
    assert (~off_grid).sum() > 0 and off_grid.sum() > 0
    # far outside: the sample and every gradient are exactly zero
    with torch.no_grad():
        loc.fill_(5.0)
    out, g_value, g_loc, g_attn = _grads(ms_deform_attn, (value, spatial_shapes, starts, loc, attn), grad_out)
    for t in (out, g_value, g_loc, g_attn):
        assert torch.count_nonzero(t) == 0


def test_non_contiguous_inputs():
    shapes = [(3, 7), (2, 5)]
    value, spatial_shapes, starts, loc, attn = make_inputs(shapes, N=2, M=3, D=4, Q=6, P=2, requires_grad=False)
    value_nc = value.transpose(2, 3).contiguous().transpose(2, 3).requires_grad_()  # (N, S, M, D) strided view
    loc_nc = loc.permute(1, 0, 2, 3, 4, 5).contiguous().permute(1, 0, 2, 3, 4, 5).requires_grad_()
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or attn_nc.is_contiguous())
    _assert_matches_reference((value_nc, spatial_shapes, starts, loc_nc, attn_nc))


@pytest.mark.parametrize("N,Q", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_queries(N, Q):
    value, spatial_shapes, starts, loc, attn = make_inputs([(3, 4)], N=N, M=2, D=3, Q=Q, P=2)
    out = ms_deform_attn(value, spatial_shapes, starts, loc, attn)
    assert out.shape == (N, Q, 6)
    out.sum().backward()
    assert value.grad.shape == value.shape and torch.count_nonzero(value.grad) == 0


def test_float32_and_bfloat16_against_float64_reference():
    shapes = [(16, 20), (8, 10), (4, 5)]
    inputs64 = make_inputs(shapes, N=2, M=4, D=16, Q=64, P=4, requires_grad=False, loc_low=0.0, loc_high=1.0)
    want = ms_deform_attn_reference(*inputs64)
    value, spatial_shapes, starts, loc, attn = inputs64
    out32 = ms_deform_attn(value.float(), spatial_shapes, starts, loc.float(), attn.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), want, atol=1e-5, rtol=1e-5)
    out_bf16 = ms_deform_attn(value.bfloat16(), spatial_shapes, starts, loc.float(), attn.float())
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.double(), want, atol=3e-2, rtol=2e-2)


def _bad_input_cases():
    good = make_inputs([(3, 4), (2, 2)], N=1, M=2, D=3, Q=4, P=2, requires_grad=False)
    value, shapes, starts, loc, attn = good
    bad_shapes = torch.tensor([[3, 4], [2, 3]])
    yield "S=16", (value, bad_shapes, torch.tensor([0, 12]), loc, attn)
    yield "level_start_index", (value, shapes, torch.tensor([0, 11]), loc, attn)
    yield "last dim", (value, shapes, starts, torch.cat([loc, loc[..., :1]], -1), attn)
    yield "attention_weights must be", (value, shapes, starts, loc, attn[..., :1])
    yield "dtype", (value.float(), shapes, starts, loc, attn)
    yield "one dtype", (value, shapes, starts, loc, attn.float())
    yield "one device", (value.to("meta"), shapes, starts, loc, attn)
    yield "value must be", (value[0], shapes, starts, loc, attn)
    yield "spatial_shapes must be", (value, shapes[:, :1], starts, loc, attn)
    yield "integer", (value, shapes.float(), starts, loc, attn)
    yield "does not match", (value, shapes, starts, loc[:, :, :1], attn)


@pytest.mark.parametrize("fn", [ms_deform_attn, ms_deform_attn_reference])
@pytest.mark.parametrize("expected,args", list(_bad_input_cases()), ids=[c[0] for c in _bad_input_cases()])
def test_bad_inputs_raise_clear_errors(fn, expected, args):
    with pytest.raises(ValueError, match=expected):
        fn(*args)


def test_opcheck_schema_fake_and_autograd_registrations():
    value, spatial_shapes, starts, loc, attn = make_inputs([(3, 4), (2, 2)], N=2, M=2, D=3, Q=4, P=2)
    torch.library.opcheck(torch.ops.codetr.ms_deform_attn.default, (value, spatial_shapes, starts, loc, attn))


def test_torch_compile_fullgraph_forward_and_backward():
    shapes = [(5, 6), (3, 3)]
    inputs = make_inputs(shapes, N=2, M=2, D=4, Q=7, P=3, dtype=torch.float32)

    def fn(value, spatial_shapes, starts, loc, attn):
        return ms_deform_attn(value, spatial_shapes, starts, loc, attn).square().sum()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    value, spatial_shapes, starts, loc, attn = inputs
    got = torch.autograd.grad(compiled(*inputs), (value, loc, attn))
    want = torch.autograd.grad(fn(*inputs), (value, loc, attn))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_import_without_extension_falls_back_with_one_warning():
    code = """
import sys, warnings
sys.modules["codetr._C"] = None  # simulate a missing build
import torch
from codetr.layers import ms_deform_attn, ms_deform_attn_reference
from codetr.layers.ms_deform_attn import extension_available
assert not extension_available()
sys.path.insert(0, "tests/layers")
from ms_deform_attn_cases import make_inputs
inputs = make_inputs([(3, 4)], requires_grad=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    a = ms_deform_attn(*inputs)
    b = ms_deform_attn(*inputs)
assert len([w for w in caught if "falls back" in str(w.message)]) == 1, caught
assert torch.equal(a, ms_deform_attn_reference(*inputs))
print("fallback-ok")
"""
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.path.join(root, "projects"))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "fallback-ok" in result.stdout, result.stderr


def test_level_metadata_helper_is_consistent():
    spatial_shapes, starts, S = level_metadata([(3, 7), (1, 1), (2, 2)])
    assert S == 21 + 1 + 4 and starts.tolist() == [0, 21, 22]
