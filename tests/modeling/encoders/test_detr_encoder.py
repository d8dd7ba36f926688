import math

import pytest
import torch
from torch import nn

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.encoders.detr import DETREncoder, DETREncoderLayer


def _attention_by_hand(mha: nn.MultiheadAttention, q_in, k_in, v_in, key_padding_mask):
    """Per-head softmax(q k^T / sqrt(d)) v with the in/out projections of ``mha``; (N, S, C)."""
    c, m = mha.embed_dim, mha.num_heads
    d = c // m
    wq, wk, wv = mha.in_proj_weight.split(c)
    bq, bk, bv = mha.in_proj_bias.split(c)
    n, s, _ = q_in.shape
    q = (q_in @ wq.T + bq).view(n, s, m, d)
    k = (k_in @ wk.T + bk).view(n, -1, m, d)
    v = (v_in @ wv.T + bv).view(n, -1, m, d)
    logits = torch.einsum("nqmd,nkmd->nmqk", q, k) / math.sqrt(d)
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    out = torch.einsum("nmqk,nkmd->nqmd", logits.softmax(-1), v).reshape(n, s, c)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def _layer_by_hand(layer: DETREncoderLayer, src, pos, mask):
    """DETR's post-norm order written out: attention, add, norm1; FFN, add, norm2."""
    ln = nn.functional.layer_norm
    x = src + _attention_by_hand(layer.self_attn, src + pos, src + pos, src, mask)
    x = ln(x, (x.shape[-1],), layer.norm1.weight, layer.norm1.bias)
    h = x @ layer.linear1.weight.T + layer.linear1.bias
    h = h.relu() if isinstance(layer.activation, nn.ReLU) else torch.where(h > 0, h, layer.activation.weight * h)
    x = x + h @ layer.linear2.weight.T + layer.linear2.bias
    return ln(x, (x.shape[-1],), layer.norm2.weight, layer.norm2.bias)


@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_encoder_layer_post_norm_matches_explicit_computation(activation):
    torch.manual_seed(0)
    layer = DETREncoderLayer(16, 4, 32, dropout=0.1, activation=activation).double().eval()
    if activation == "prelu":
        nn.init.constant_(layer.activation.weight, 0.3)
    src, pos = torch.randn(2, 7, 16).double(), torch.randn(2, 7, 16).double()
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True
    torch.testing.assert_close(layer(src, pos, mask), _layer_by_hand(layer, src, pos, mask))


def test_dab_encoder_scales_positions_per_layer():
    torch.manual_seed(1)
    enc = DETREncoder(3, 16, 4, 32, dropout=0.0, activation="prelu", pos_scale=True).double().eval()
    src, pos = torch.randn(2, 5, 16).double(), torch.randn(2, 5, 16).double()
    x = src
    for layer in enc.layers:
        l0, l1 = enc.query_scale.layers
        scale = (x @ l0.weight.T + l0.bias).relu() @ l1.weight.T + l1.bias
        x = _layer_by_hand(layer, x, pos * scale, None)
    torch.testing.assert_close(enc(src, pos), x)
    # without pos_scale the positions enter unscaled, and there is no query_scale
    plain = DETREncoder(2, 16, 4, 32, dropout=0.0)
    assert plain.query_scale is None
    assert not any("query_scale" in k for k in plain.state_dict())


def test_official_key_names():
    keys = set(DETREncoder(1, 16, 4, 32, activation="prelu", pos_scale=True).state_dict())
    for k in ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "linear1.weight",
              "linear2.bias", "norm1.weight", "norm2.bias", "activation.weight"]:
        assert f"layers.0.{k}" in keys
    assert "query_scale.layers.1.weight" in keys


def _encode(enc, pe, feature, mask):
    return enc.encode([feature], [mask], [pe(mask)])


def test_batched_with_padding_equals_one_image_at_a_time():
    torch.manual_seed(2)
    c = 16
    enc = DETREncoder(2, c, 4, 32, dropout=0.1).eval()
    pe = PositionEmbeddingSine(c // 2, temperature=10000, normalize=True)
    sizes = [(4, 6), (3, 4)]
    feats = [torch.randn(1, c, h, w) for h, w in sizes]
    batch = torch.zeros(2, c, 4, 6)
    mask = torch.ones(2, 4, 6, dtype=torch.bool)
    for i, ((h, w), f) in enumerate(zip(sizes, feats)):
        batch[i, :, :h, :w] = f[0]
        mask[i, :h, :w] = False
    out = _encode(enc, pe, batch, mask)
    assert out.memory.shape == (2, 24, c) and out.memory_pos.shape == (2, 24, c)
    assert out.spatial_shapes.tolist() == [[4, 6]] and out.level_start_index.tolist() == [0]
    torch.testing.assert_close(out.valid_ratios[1, 0], torch.tensor([4 / 6, 3 / 4]))
    maps = out.memory_maps()[0]
    for i, ((h, w), f) in enumerate(zip(sizes, feats)):
        single = _encode(enc, pe, f, torch.zeros(1, h, w, dtype=torch.bool))
        torch.testing.assert_close(maps[i, :, :h, :w], single.memory_maps()[0][0], atol=1e-5, rtol=1e-5)
    # padding changes nothing only because of the mask: without it the padded image differs
    unmasked = enc(batch.flatten(2).transpose(1, 2), out.memory_pos, None)
    single = _encode(enc, pe, feats[1], torch.zeros(1, 3, 4, dtype=torch.bool)).memory_maps()[0][0]
    assert not torch.allclose(unmasked.transpose(1, 2).reshape(2, c, 4, 6)[1, :, :3, :4], single, atol=1e-3)


def test_encode_checks_inputs():
    enc = DETREncoder(1, 16, 4, 32)
    f, m = torch.randn(1, 16, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool)
    p = torch.randn(1, 16, 2, 2)
    with pytest.raises(ValueError, match="one feature level"):
        enc.encode([f, f], [m, m], [p, p])
    with pytest.raises(ValueError, match="8 channels, expected 16"):
        enc.encode([f[:, :8]], [m], [p])
    with pytest.raises(ValueError, match="'gelu'"):
        DETREncoder(1, 16, 4, 32, activation="gelu")


def test_position_embedding_settings_of_the_family_hand_computed():
    """DETR / Conditional DETR: T = 10000; DAB-DETR's keys: T = 20; both normalise the 1-based
    cumulative position by the valid extent (no -0.5 offset) and scale by 2 pi; y channels first."""
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)
    mask[:, :, 3:] = True  # 3 valid columns
    for temperature in (10000, 20):
        out = PositionEmbeddingSine(2, temperature=temperature, normalize=True)(mask)
        y, x = 2 / 2 * 2 * math.pi, 2 / 3 * 2 * math.pi  # row 1, column 1
        expected = torch.tensor([math.sin(y), math.cos(y), math.sin(x), math.cos(x)])
        torch.testing.assert_close(out[0, :, 1, 1], expected, atol=1e-5, rtol=1e-5)
        out4 = PositionEmbeddingSine(4, temperature=temperature, normalize=True)(mask)
        d = temperature ** 0.5  # 2 * (2 // 2) / 4
        expected = torch.tensor([math.sin(y), math.cos(y), math.sin(y / d), math.cos(y / d)])
        torch.testing.assert_close(out4[0, :4, 1, 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pos_scale", [False, True])
def test_official_xavier_initialisation(pos_scale):
    """Every matrix of the layers (and DAB's query_scale) is xavier-uniform, as the official
    ``Transformer._reset_parameters``: bound sqrt(6 / (fan_in + fan_out)), standard deviation
    bound / sqrt(3) (PyTorch's default Linear init would give linear2 (2048 -> 256) a bound of
    1 / sqrt(2048) = 0.022, less than half the xavier 0.051)."""
    torch.manual_seed(0)
    enc = DETREncoder(num_layers=2, embed_dim=256, ffn_dim=2048, pos_scale=pos_scale)
    mats = [(n, p) for n, p in enc.named_parameters() if p.dim() > 1]
    assert len(mats) == 2 * 4 + (2 if pos_scale else 0)
    for name, p in mats:
        fan_out, fan_in = p.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert p.abs().max() <= bound, name
        assert abs(p.std().item() - bound / math.sqrt(3)) < 0.05 * bound, name
    for layer in enc.layers:
        assert torch.count_nonzero(layer.self_attn.out_proj.bias) == 0
