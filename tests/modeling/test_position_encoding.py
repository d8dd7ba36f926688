import math

import torch

from codetr.layers.mlp import MLP
from codetr.layers.position_encoding import PositionEmbeddingSine, get_sine_pos_embed


def _hand_sine(v, dims):
    """[sin(v/d0), cos(v/d1), sin(v/d2), cos(v/d3), ...] for the given divisors."""
    return [math.sin(v / d) if i % 2 == 0 else math.cos(v / d) for i, d in enumerate(dims)]


def test_position_embedding_sine_hand_computed():
    pe = PositionEmbeddingSine(num_pos_feats=4, temperature=10000, normalize=True, offset=-0.5)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    out = pe(mask)
    assert out.shape == (1, 8, 2, 3)
    dims = [1.0, 1.0, 100.0, 100.0]  # 10000 ** (2 * (i // 2) / 4)
    # row 1, column 2: y = (2 - 0.5) / 2 * 2pi, x = (3 - 0.5) / 3 * 2pi
    y, x = 1.5 / 2 * 2 * math.pi, 2.5 / 3 * 2 * math.pi
    expected = torch.tensor(_hand_sine(y, dims) + _hand_sine(x, dims))
    torch.testing.assert_close(out[0, :, 1, 2], expected, atol=1e-5, rtol=1e-5)
    # row 0, column 0 without normalisation and offset: y = x = 1
    pe_raw = PositionEmbeddingSine(num_pos_feats=4, temperature=10000, normalize=False)
    expected = torch.tensor(_hand_sine(1.0, dims) * 2)
    torch.testing.assert_close(pe_raw(mask)[0, :, 0, 0], expected, atol=1e-6, rtol=1e-6)


def test_position_embedding_sine_ignores_padding():
    pe = PositionEmbeddingSine(num_pos_feats=8, normalize=True, offset=-0.5)
    small = pe(torch.zeros(1, 3, 5, dtype=torch.bool))
    mask = torch.ones(1, 6, 7, dtype=torch.bool)
    mask[:, :3, :5] = False
    padded = pe(mask)
    torch.testing.assert_close(padded[:, :, :3, :5], small)
    assert padded[:, :, 3:].abs().sum() == 0 and padded[:, :, :, 5:].abs().sum() == 0


def test_get_sine_pos_embed_boxes_hand_computed():
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    out = get_sine_pos_embed(box, num_pos_feats=2, temperature=10000)
    assert out.shape == (1, 8)
    expected = []
    for c in (0.2, 0.1, 0.3, 0.4):  # (y, x, w, h): x and y exchanged, as in DINO
        expected += [math.sin(2 * math.pi * c), math.cos(2 * math.pi * c)]
    torch.testing.assert_close(out[0], torch.tensor(expected), atol=1e-6, rtol=1e-6)
    out = get_sine_pos_embed(box, num_pos_feats=4, temperature=100, exchange_xy=False)
    dims = [1.0, 1.0, 10.0, 10.0]  # 100 ** (2 * (i // 2) / 4)
    torch.testing.assert_close(out[0, :4], torch.tensor(_hand_sine(2 * math.pi * 0.1, dims)), atol=1e-6, rtol=1e-6)
    assert get_sine_pos_embed(torch.rand(2, 5, 4)).shape == (2, 5, 512)


def test_mlp():
    mlp = MLP(3, 5, 2, 3)
    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(5, 3), (5, 5), (2, 5)]
    x = torch.randn(4, 3)
    h = mlp.layers[1](mlp.layers[0](x).relu()).relu()
    torch.testing.assert_close(mlp(x), mlp.layers[2](h))
