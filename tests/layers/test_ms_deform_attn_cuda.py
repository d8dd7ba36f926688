"""CUDA kernels against the reference (runs only where a GPU and a CUDA build are present;
CI has neither, and checks only that the CUDA kernels compile)."""
import pytest
import torch

from codetr.layers import ms_deform_attn, ms_deform_attn_reference
from codetr.layers.ms_deform_attn import cuda_kernels_available

from ms_deform_attn_cases import make_inputs, realistic_locations, level_metadata

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_kernels_available()), reason="needs a GPU and codetr._C built with CUDA"
)


def _grads(fn, value, shapes, starts, loc, attn, grad_out):
    out = fn(value, shapes, starts, loc, attn)
    return (out, *torch.autograd.grad(out, (value, loc, attn), grad_out))


@pytest.mark.parametrize("seed", range(6))
def test_float64_matches_reference_on_random_shapes(seed):
    g = torch.Generator().manual_seed(seed)
    L = int(torch.randint(1, 6, (1,), generator=g))
    shapes = [tuple(int(s) for s in torch.randint(1, 12, (2,), generator=g)) for _ in range(L)]
    P = int(torch.randint(1, 9, (1,), generator=g))
    D = int(torch.randint(1, 70, (1,), generator=g))  # covers D > 32 and non powers of two
    inputs = make_inputs(shapes, N=2, M=3, D=D, Q=17, P=P, device="cuda", seed=seed, loc_low=-0.5, loc_high=1.5)
    grad_out = torch.randn(2, 17, 3 * D, dtype=torch.float64, device="cuda")
    got = _grads(ms_deform_attn, *inputs, grad_out)
    want = _grads(ms_deform_attn_reference, *inputs, grad_out)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_gradcheck_cuda():
    value, shapes, starts, loc, attn = make_inputs([(3, 7), (2, 2)], N=2, M=2, D=3, Q=3, P=2, device="cuda")
    assert torch.autograd.gradcheck(lambda v, l, a: ms_deform_attn(v, shapes, starts, l, a), (value, loc, attn))


def test_cpu_and_cuda_agree_float32():
    inputs = make_inputs([(16, 20), (8, 10), (4, 5)], N=2, M=8, D=32, Q=200, P=4, dtype=torch.float32,
                         loc_low=0.0, loc_high=1.0)
    grad_out = torch.randn(2, 200, 256)
    cpu = _grads(ms_deform_attn, *inputs, grad_out)
    cuda_inputs = [t.detach().cuda().requires_grad_(t.requires_grad) for t in inputs]
    gpu = _grads(ms_deform_attn, *cuda_inputs, grad_out.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_types_against_float32_reference(dtype, atol):
    spatial_shapes, starts, S = level_metadata([(32, 40), (16, 20), (8, 10), (4, 5)], "cuda")
    g = torch.Generator().manual_seed(0)
    value = torch.randn(2, S, 8, 32, generator=g).cuda()
    loc = realistic_locations(spatial_shapes.cpu(), 2, 300, 8, 4, device="cuda")
    attn = torch.rand(2, 300, 8, 4, 4, generator=g).cuda().softmax(-1)
    want = ms_deform_attn_reference(value, spatial_shapes, starts, loc, attn)
    v = value.to(dtype).requires_grad_()
    out = ms_deform_attn(v, spatial_shapes, starts, loc, attn)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), want, atol=atol, rtol=atol)
    out.float().sum().backward()
    assert v.grad.dtype == dtype and torch.isfinite(v.grad.float()).all()
    # grad_value accumulated in float32: compare with the float32 reference gradient
    v32 = value.clone().requires_grad_()
    ms_deform_attn_reference(v32, spatial_shapes, starts, loc, attn).sum().backward()
    torch.testing.assert_close(v.grad.float(), v32.grad, atol=atol, rtol=atol)


def test_empty_inputs_cuda():
    value, shapes, starts, loc, attn = make_inputs([(3, 4)], N=0, M=2, D=3, Q=5, P=2, device="cuda")
    assert ms_deform_attn(value, shapes, starts, loc, attn).shape == (0, 5, 6)
