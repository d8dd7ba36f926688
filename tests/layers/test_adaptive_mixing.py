"""Adaptive mixing (AdaMixer): against an explicit einsum computation."""
import pytest
import torch

from codetr.layers.adaptive_mixing import AdaptiveMixing


def _norm_relu(t):
    """LayerNorm over the last two dims (no affine, eps 1e-5), then ReLU."""
    mean = t.mean((-2, -1), keepdim=True)
    var = t.var((-2, -1), unbiased=False, keepdim=True)
    return ((t - mean) / torch.sqrt(var + 1e-5)).clamp_min(0)


def test_matches_explicit_einsum():
    torch.manual_seed(0)
    n, q, g, p_in, p_out, feat, query_dim = 2, 3, 2, 5, 7, 6, 10
    mix = AdaptiveMixing(in_dim=feat, query_dim=query_dim, num_groups=g, in_points=p_in, out_points=p_out).double()
    for prm in mix.parameters():  # non-trivial generator weights
        torch.nn.init.normal_(prm, std=0.3)
    x = torch.randn(n, q, g, p_in, feat // g, dtype=torch.float64)
    query = torch.randn(n, q, query_dim, dtype=torch.float64)

    ci = co = feat // g
    params = query @ mix.parameter_generator.weight.T + mix.parameter_generator.bias  # (N, Q, G * (ci co + pin pout))
    params = params.view(n, q, g, ci * co + p_in * p_out)
    M = params[..., : ci * co].reshape(n, q, g, ci, co)
    S = params[..., ci * co:].reshape(n, q, g, p_out, p_in)
    y = _norm_relu(torch.einsum("nqgpc,nqgcd->nqgpd", x, M))
    z = _norm_relu(torch.einsum("nqgop,nqgpd->nqgod", S, y))
    flat = z.reshape(n, q, g * p_out * co)
    expected = query + flat @ mix.out_proj.weight.T + mix.out_proj.bias
    torch.testing.assert_close(mix(x, query), expected)


def test_out_dim_and_initialisation():
    mix = AdaptiveMixing(in_dim=8, query_dim=6, num_groups=2, in_points=3, out_points=4, out_dim=12)
    assert mix.parameter_generator.out_features == 2 * (4 * 6 + 3 * 4)
    assert mix.out_proj.in_features == 2 * 4 * 6
    assert not mix.parameter_generator.weight.any()
    # zero generator weight: every query gets the same mixing matrices (from the bias)
    m, s = mix.mixing_matrices(torch.randn(1, 5, 6))
    assert torch.equal(m[0, 0], m[0, 4]) and torch.equal(s[0, 1], s[0, 3])
    out = mix(torch.randn(1, 5, 2, 3, 4), torch.randn(1, 5, 6))
    assert out.shape == (1, 5, 6)


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        AdaptiveMixing(in_dim=10, num_groups=4)
    mix = AdaptiveMixing(in_dim=8, query_dim=6, num_groups=2, in_points=3, out_points=4)
    with pytest.raises(ValueError, match="P_in=3"):
        mix(torch.randn(1, 5, 2, 4, 4), torch.randn(1, 5, 6))
