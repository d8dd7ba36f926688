import math

import pytest
import torch
from torch import nn

from codetr.layers.position_encoding import PositionEmbeddingSine, get_sine_pos_embed
from codetr.modeling.decoders.conditional import (
    ConditionalDecoder,
    ConditionalDecoderLayer,
    ConditionalSpatialQuery,
)
from codetr.modeling.encoders.detr import DETREncoder
from codetr.modeling.queries.group import QueryGroup

C, M = 16, 4  # head dim 4; the cross-attention's query/key head dim 2 * 4 = 8


def _lin(layer, x):
    return x @ layer.weight.T + layer.bias


def _ln(norm, x):
    return nn.functional.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias)


def _heads(x):
    return x.view(x.shape[0], x.shape[1], M, -1)


def _softmax_attend(logits, v, out_proj):
    """logits (N, M, Q, S), v (N, S, C) -> out_proj(concat_h softmax(logits_h) v_h)."""
    out = torch.einsum("nmqs,nsmd->nqmd", logits.softmax(-1), _heads(v)).flatten(2)
    return _lin(out_proj, out)


def _layer_by_hand(layer, x, p, sine, mem, mem_pos, mem_mask=None, attn_mask=None):
    """The conditional layer written out head by head: the cross-attention logit is the sum of a
    content term qc_h . kc_h and a spatial term qs_h . kp_h, scaled by 1 / sqrt(2 C / M)."""
    d = C // M
    q = _heads(_lin(layer.sa_qcontent_proj, x) + _lin(layer.sa_qpos_proj, p))
    k = _heads(_lin(layer.sa_kcontent_proj, x) + _lin(layer.sa_kpos_proj, p))
    logits = torch.einsum("nqmd,nsmd->nmqs", q, k) / math.sqrt(d)
    if attn_mask is not None:
        logits = logits.masked_fill(attn_mask, float("-inf"))
    x = _ln(layer.norm1, x + _softmax_attend(logits, _lin(layer.sa_v_proj, x), layer.self_attn.out_proj))

    qc = _lin(layer.ca_qcontent_proj, x)
    kc = _lin(layer.ca_kcontent_proj, mem)
    kp = _lin(layer.ca_kpos_proj, mem_pos)
    if layer.is_first:
        qc = qc + _lin(layer.ca_qpos_proj, p)
        kc = kc + kp
    qs = _lin(layer.ca_qpos_sine_proj, sine)
    content = torch.einsum("nqmd,nsmd->nmqs", _heads(qc), _heads(kc))
    spatial = torch.einsum("nqmd,nsmd->nmqs", _heads(qs), _heads(kp))
    logits = (content + spatial) / math.sqrt(2 * d)
    if mem_mask is not None:
        logits = logits.masked_fill(mem_mask[:, None, None], float("-inf"))
    x = _ln(layer.norm2, x + _softmax_attend(logits, _lin(layer.ca_v_proj, mem), layer.cross_attn.out_proj))
    h = _lin(layer.linear1, x)
    h = h.relu() if isinstance(layer.activation, nn.ReLU) else torch.where(h > 0, h, layer.activation.weight * h)
    return _ln(layer.norm3, x + _lin(layer.linear2, h))


def _randomise(module):
    torch.manual_seed(3)
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)


@pytest.mark.parametrize("is_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "prelu"])
def test_layer_matches_explicit_per_head_content_plus_spatial(is_first, activation):
    layer = ConditionalDecoderLayer(C, M, 32, dropout=0.1, activation=activation, is_first=is_first).double().eval()
    _randomise(layer)
    g = torch.Generator().manual_seed(0)
    x, p, sine = (torch.randn(2, 5, C, generator=g).double() for _ in range(3))
    mem, mem_pos = torch.randn(2, 7, C, generator=g).double(), torch.randn(2, 7, C, generator=g).double()
    mem_mask = torch.zeros(2, 7, dtype=torch.bool)
    mem_mask[1, 4:] = True
    attn_mask = torch.zeros(5, 5, dtype=torch.bool)
    attn_mask[:3, 3:] = True
    out = layer.attend(x, p, sine, mem, mem_pos, mem_mask, attn_mask)
    torch.testing.assert_close(out, _layer_by_hand(layer, x, p, sine, mem, mem_pos, mem_mask, attn_mask))
    # (N * heads, Q, Q) masks mean the same
    out3 = layer.attend(x, p, sine, mem, mem_pos, mem_mask, attn_mask.expand(2 * M, 5, 5))
    torch.testing.assert_close(out3, out)


def test_only_the_first_layer_adds_positions_in_cross_attention():
    first = ConditionalDecoderLayer(C, M, 32, is_first=True)
    later = ConditionalDecoderLayer(C, M, 32)
    assert "ca_qpos_proj.weight" in first.state_dict()
    assert not any(k.startswith("ca_qpos_proj") for k in later.state_dict())
    shapes = {k: tuple(v.shape) for k, v in first.state_dict().items()}
    assert shapes["cross_attn.out_proj.weight"] == (C, C) and shapes["self_attn.out_proj.weight"] == (C, C)
    assert "self_attn.in_proj_weight" not in shapes  # no in-projections: the sa_/ca_ projections are them


def _hand_sine(v, num_feats, temperature=10000):
    """gen_sineembed_for_position of one coordinate, by hand."""
    out = []
    for i in range(num_feats):
        arg = v * 2 * math.pi / temperature ** (2 * (i // 2) / num_feats)
        out.append(math.sin(arg) if i % 2 == 0 else math.cos(arg))
    return out


def test_sine_embedding_of_anchors_is_y_x_w_h_hand_computed():
    box = torch.tensor([[0.3, 0.6, 0.2, 0.8]])  # (x, y, w, h)
    x, y, w, h = box[0].tolist()
    expected = _hand_sine(y, 4) + _hand_sine(x, 4) + _hand_sine(w, 4) + _hand_sine(h, 4)
    torch.testing.assert_close(get_sine_pos_embed(box, 4)[0], torch.tensor(expected), atol=1e-6, rtol=1e-6)
    expected2 = _hand_sine(y, 4) + _hand_sine(x, 4)
    torch.testing.assert_close(get_sine_pos_embed(box[:, :2], 4)[0], torch.tensor(expected2), atol=1e-6, rtol=1e-6)


def test_spatial_query_scale_and_hw_modulation_explicit_formula():
    torch.manual_seed(4)
    sq = ConditionalSpatialQuery(8, modulate_hw=True).double()
    _randomise(sq)
    content = torch.randn(1, 2, 8).double()
    ref = torch.tensor([[[0.3, 0.6, 0.2, 0.8], [0.5, 0.1, 0.4, 0.25]]]).double()
    for first in (True, False):
        out = sq(content, ref, first)
        for q in range(2):
            x, y, w, h = ref[0, q].tolist()
            sine = torch.tensor(_hand_sine(y, 4) + _hand_sine(x, 4)).double()
            lam = 1.0 if first else _lin(sq.query_scale.layers[1], _lin(sq.query_scale.layers[0], content[0, q]).relu())
            wh = torch.sigmoid(_lin(sq.ref_anchor_head.layers[1], _lin(sq.ref_anchor_head.layers[0], content[0, q]).relu()))
            expected = sine * lam
            expected = torch.cat([expected[:4] * wh[1] / h, expected[4:] * wh[0] / w])  # y half by h, x half by w
            torch.testing.assert_close(out[0, q], expected, atol=1e-6, rtol=1e-6)
    plain = ConditionalSpatialQuery(8).double()
    assert plain.ref_anchor_head is None
    sine = torch.tensor(_hand_sine(0.6, 4) + _hand_sine(0.3, 4)).double()
    torch.testing.assert_close(plain(content, ref[..., :2], True)[0, 0], sine, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="4-d references"):
        sq(content, ref[..., :2], True)


def _encoder_output(batch_sizes, seed=5):
    """A padded batch of random feature maps through a small DETR encoder, and each image alone."""
    torch.manual_seed(seed)
    enc = DETREncoder(1, C, M, 32, dropout=0.0).eval()
    pe = PositionEmbeddingSine(C // 2, normalize=True)
    hmax = max(h for h, _ in batch_sizes)
    wmax = max(w for _, w in batch_sizes)
    feats = [torch.randn(1, C, h, w) for h, w in batch_sizes]
    batch = torch.zeros(len(feats), C, hmax, wmax)
    mask = torch.ones(len(feats), hmax, wmax, dtype=torch.bool)
    for i, ((h, w), f) in enumerate(zip(batch_sizes, feats)):
        batch[i, :, :h, :w] = f[0]
        mask[i, :h, :w] = False
    single = [enc.encode([f], [torch.zeros(1, *f.shape[-2:], dtype=torch.bool)], [pe(torch.zeros(1, *f.shape[-2:], dtype=torch.bool))]) for f in feats]
    return enc.encode([batch], [mask], [pe(mask)]), single


@pytest.mark.parametrize("variant", ["conditional", "dab"])
def test_decoder_batched_equals_single_image_and_initial_boxes(variant):
    torch.manual_seed(6)
    if variant == "conditional":
        dec = ConditionalDecoder(3, C, M, 32, dropout=0.1, num_classes=5, ref_dim=2).eval()
        ref = torch.rand(2, 4, 2) * 0.8 + 0.1
        pos = torch.randn(2, 4, C)
        groups = lambda sl: [QueryGroup(torch.zeros(1, 4, C), ref[sl], pos[sl])]  # noqa: E731
    else:
        dec = ConditionalDecoder(3, C, M, 32, dropout=0.0, activation="prelu", num_classes=5, ref_dim=4,
                                 refine=True, ref_point_head=True, modulate_hw=True).eval()
        ref = torch.rand(2, 4, 4) * 0.8 + 0.1
        groups = lambda sl: [QueryGroup(torch.zeros(1, 4, C), ref[sl])]  # noqa: E731
    enc, singles = _encoder_output([(3, 5), (2, 3)])
    full = dec([QueryGroup(torch.zeros(2, 4, C), ref, None if variant == "dab" else pos)], enc)
    for i in range(2):
        one = dec(groups(slice(i, i + 1)), singles[i])
        torch.testing.assert_close(full.boxes[:, i], one.boxes[:, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(full.logits[:, i], one.logits[:, 0], atol=1e-5, rtol=1e-5)
    # at initialisation the box head's last layer is zero: the boxes are the references
    # (points: centre = point, w = h = sigmoid(0) = 0.5; anchors: the anchors, at every layer)
    expected = ref if variant == "dab" else torch.cat([ref, torch.full_like(ref, 0.5)], -1)
    torch.testing.assert_close(full.boxes, expected.expand_as(full.boxes), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec.class_embed.bias.sigmoid(), torch.full((5,), 0.01))


def test_decoder_shares_spatial_query_and_heads_once_in_the_state_dict():
    dec = ConditionalDecoder(3, C, M, 32, ref_dim=4, refine=True, ref_point_head=True, modulate_hw=True)
    keys = list(dec.state_dict())
    assert sum(k.startswith("spatial_query.query_scale.layers.0.weight") for k in keys) == 1
    assert "spatial_query.ref_anchor_head.layers.1.weight" in keys
    assert not any(k.startswith("layers.") and "spatial_query" in k for k in keys)
    assert "class_embed.weight" in keys and "bbox_embed.layers.2.weight" in keys and "norm.weight" in keys
    assert "ref_point_head.layers.0.weight" in keys and dec.ref_point_head.layers[0].weight.shape == (C, 2 * C)
    assert [k for k in keys if "ca_qpos_proj" in k] == ["layers.0.ca_qpos_proj.weight", "layers.0.ca_qpos_proj.bias"]
    # the shared module is the one the layers use: changing it changes every layer's output
    assert all(layer._spatial_query[0] is dec.spatial_query for layer in dec.layers)


def test_self_attention_mask_isolates_blocked_queries():
    """A query that may not see query j gives the same output whatever j's content (the DN groups'
    isolation), through every layer of the decoder."""
    torch.manual_seed(7)
    dec = ConditionalDecoder(2, C, M, 32, dropout=0.0, ref_dim=2, ref_point_head=True).eval()
    enc, _ = _encoder_output([(3, 4)])
    ref = torch.rand(1, 4, 2)
    content = torch.randn(1, 4, C)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, 2:] = True  # queries 0, 1 may not see 2, 3
    out_a = dec([QueryGroup(content, ref)], enc, mask)
    content_b = content.clone()
    content_b[:, 2:] += 1.0
    out_b = dec([QueryGroup(content_b, ref)], enc, mask)
    torch.testing.assert_close(out_a.hidden[:, :, :2], out_b.hidden[:, :, :2])
    assert not torch.allclose(out_a.hidden[:, :, 2:], out_b.hidden[:, :, 2:])
    unmasked = dec([QueryGroup(content_b, ref)], enc)
    assert not torch.allclose(out_a.hidden[:, :, :2], unmasked.hidden[:, :, :2])


def test_decoder_checks_settings():
    with pytest.raises(ValueError, match="ref_dim must be 2"):
        ConditionalDecoder(1, C, M, 32, ref_dim=3)
    with pytest.raises(ValueError, match="modulate_hw needs 4-d"):
        ConditionalDecoder(1, C, M, 32, ref_dim=2, modulate_hw=True)
    layer = ConditionalDecoderLayer(C, M, 32)
    with pytest.raises(RuntimeError, match="use_spatial_query"):
        layer(torch.zeros(1, 1, C), torch.zeros(1, 1, C), torch.zeros(1, 1, 2), None)
