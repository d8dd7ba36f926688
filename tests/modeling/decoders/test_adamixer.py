"""AdaMixer decoder layer: position embedding, IoF bias, attention block against a hand
computation, shapes, gradients, initialisation, batched vs single-image."""
import math

import pytest
import torch
import torch.nn.functional as F

from codetr.layers.adaptive_sampling import zero_padding
from codetr.modeling.coders import refine_xyzr, xyxy_to_xyzr
from codetr.modeling.decoders.adamixer import (
    AdaMixerDecoderLayer,
    AdaMixerHead,
    XYZRSinePosition,
    iof_attention_bias,
    xyzr_position_embedding,
)

from adamixer_cases import make_enc

STRIDES = (4, 8)


def small_layer(**kw):
    args = dict(embed_dim=16, num_heads=2, ffn_dim=32, num_groups=2, in_points=4, out_points=3, strides=STRIDES)
    args.update(kw)
    return AdaMixerDecoderLayer(**args)


def test_position_embedding_hand_values():
    xyzr = torch.tensor([1000.0, 0.0, 3.0, -1.0])
    pe = xyzr_position_embedding(xyzr, 32)  # 8 channels per coordinate
    assert pe.shape == (32,)
    # x / 1000 = 1: channels (sin(1 / T^0), cos(1 / T^0), sin(1 / T^(2/8)), cos(1 / T^(2/8)), ...)
    f1 = 10000 ** (2 / 8)
    torch.testing.assert_close(pe[:4], torch.tensor([math.sin(1), math.cos(1), math.sin(1 / f1), math.cos(1 / f1)]))
    torch.testing.assert_close(pe[8:16], torch.tensor([0.0, 1.0] * 4))  # y = 0
    torch.testing.assert_close(pe[16:18], torch.tensor([math.sin(3), math.cos(3)]))  # z
    torch.testing.assert_close(pe[24:26], torch.tensor([math.sin(-1), math.cos(-1)]))  # r, not divided
    torch.testing.assert_close(XYZRSinePosition(32)(xyzr[None, None]), pe[None, None])


def test_iof_bias_hand_case():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 20.0], [20.0, 20.0, 30.0, 40.0]]])
    tau = torch.tensor([1.0, 2.0])
    bias = iof_attention_bias(boxes, tau)
    assert bias.shape == (1, 2, 3, 3)
    # A & B = 5 x 10 = 50; IoF(A, B) = 50 / 100, IoF(B, A) = 50 / 200; C overlaps nothing
    iof = torch.tensor([[1.0, 0.5, 0.0], [0.25, 1.0, 0.0], [0.0, 0.0, 1.0]])
    expected = (iof + 1e-7).log()
    torch.testing.assert_close(bias[0, 0], expected)
    torch.testing.assert_close(bias[0, 1], 2 * expected)


def test_attention_block_matches_a_hand_computation():
    torch.manual_seed(0)
    layer = small_layer().double()
    n, q, c, h = 1, 3, 16, 2
    content = torch.randn(n, q, c, dtype=torch.float64)
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 20.0], [2.0, 3.0, 12.0, 9.0]]],
                         dtype=torch.float64)
    xyzr = xyxy_to_xyzr(boxes, eps=0.0)
    captured = {}
    layer.norm1.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    layer(content, None, xyzr, make_enc([torch.randn(1, 16, 6, 6, dtype=torch.float64),
                                         torch.randn(1, 16, 3, 3, dtype=torch.float64)]))

    x = content + xyzr_position_embedding(xyzr, c).double()  # query = key = value = content + pe
    w, b = layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias
    qkv = [x @ w[i * c:(i + 1) * c].T + b[i * c:(i + 1) * c] for i in range(3)]
    d = c // h
    heads = []
    for hi in range(h):
        qh, kh, vh = (t[0, :, hi * d:(hi + 1) * d] for t in qkv)
        logits = qh @ kh.T / math.sqrt(d)
        for i in range(q):
            for j in range(q):
                bi, bj = boxes[0, i], boxes[0, j]
                iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]))
                ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]))
                iof = iw * ih / ((bi[2] - bi[0]) * (bi[3] - bi[1]))
                logits[i, j] += layer.iof_tau[hi] * math.log(iof + 1e-7)
        heads.append(logits.softmax(-1) @ vh)
    attn = torch.cat(heads, -1) @ layer.self_attn.out_proj.weight.T + layer.self_attn.out_proj.bias
    expected = F.layer_norm(x[0] + attn, (c,), layer.norm1.weight, layer.norm1.bias)
    torch.testing.assert_close(captured["out"][0], expected)


def test_attention_mask_blocks_and_iof_tau_has_gradient():
    torch.manual_seed(1)
    layer = small_layer()
    xyzr = torch.tensor([[[20.0, 20.0, 3.0, 0.0], [22.0, 21.0, 3.5, 0.5], [40.0, 40.0, 2.0, 0.0]]])
    blocked = torch.zeros(3, 3, dtype=torch.bool)
    blocked[0, 1] = True
    bias = layer.attention_bias(xyzr, blocked)
    assert bias.shape == (2, 3, 3)
    assert torch.isinf(bias[:, 0, 1]).all() and torch.isfinite(bias[:, 1, 0]).all()
    bias.masked_fill(torch.isinf(bias), 0).sum().backward()
    assert layer.iof_tau.grad is not None and layer.iof_tau.grad.abs().sum() > 0


def test_shapes_gradients_and_positions_carry_no_gradient():
    torch.manual_seed(2)
    layer = small_layer()
    cls_head = AdaMixerHead(16, 5, prior_prob=0.01)
    box_head = AdaMixerHead(16, 4, zero_last=True)
    for p in list(cls_head.parameters()) + list(box_head.parameters()):  # non-trivial heads for gradients
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        layer.mixing.parameter_generator.weight.normal_(std=0.05)
        layer.sampling.offsets.weight.normal_(std=0.05)
    feats = [torch.randn(2, 16, 8, 8, requires_grad=True), torch.randn(2, 16, 4, 4, requires_grad=True)]
    content = torch.randn(2, 5, 16, requires_grad=True)
    xyzr = torch.cat([torch.rand(2, 5, 2) * 32, torch.rand(2, 5, 1) + 3, torch.randn(2, 5, 1) * 0.3], -1)
    xyzr.requires_grad_()
    out = layer(content, None, xyzr, make_enc(feats))
    assert out.shape == (2, 5, 16)
    logits, delta = cls_head(out), box_head(out)
    assert logits.shape == (2, 5, 5) and delta.shape == (2, 5, 4)
    boxes = refine_xyzr(xyzr.detach(), delta)
    (logits.sum() + boxes.square().sum()).backward()
    for name, p in [*layer.named_parameters(), *cls_head.named_parameters(), *box_head.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert content.grad is not None and all(f.grad is not None for f in feats)
    assert xyzr.grad is None  # the layer detaches positions


def test_initialisation():
    torch.manual_seed(3)
    layer = small_layer()
    assert ((layer.iof_tau >= 0) & (layer.iof_tau <= 4)).all()
    assert not layer.sampling.offsets.weight.any() and (layer.sampling.offsets.bias.view(2, 4, 3)[..., 2] == -1).all()
    assert not layer.mixing.parameter_generator.weight.any() and layer.mixing.parameter_generator.bias.any()
    assert not layer.self_attn.in_proj_bias.any()
    # Xavier-uniform bound sqrt(6 / (fan_in + fan_out)) on the FFN's first linear
    bound = math.sqrt(6 / (16 + 32))
    assert layer.ffn.linear1.weight.abs().max() <= bound and layer.ffn.linear1.weight.abs().max() > 0.5 * bound
    cls_head = AdaMixerHead(16, 5, prior_prob=0.01)
    torch.testing.assert_close(cls_head.fc.bias, torch.full((5,), -math.log(99.0)))
    box_head = AdaMixerHead(16, 4, zero_last=True)
    assert not box_head.fc.weight.any() and not box_head.fc.bias.any()


@pytest.mark.parametrize("impl", ["ms_deform_attn", "grid_sample"])
def test_batched_equals_single_image(impl):
    """Image 0 is 32 x 24 pixels (maps 8 x 6 and 4 x 3), image 1 is 20 x 32 (5 x 8 and 3 x 4,
    the last stride-8 row half padding); padded into one 32 x 32 batch."""
    torch.manual_seed(4)
    layer = small_layer(sampling_impl=impl).double().eval()
    with torch.no_grad():
        layer.sampling.offsets.weight.normal_(std=0.05)
        layer.mixing.parameter_generator.weight.normal_(std=0.05)
    sizes = [(32, 24), (20, 32)]  # (H, W) in pixels
    feats, masks = [], []
    for s in STRIDES:
        f = torch.randn(2, 16, 32 // s, 32 // s, dtype=torch.float64)
        m = torch.ones(2, 32 // s, 32 // s, dtype=torch.bool)
        for i, (h, w) in enumerate(sizes):
            m[i, : math.ceil(h / s), : math.ceil(w / s)] = False
        feats.append(f)
        masks.append(m)
    feats = zero_padding(feats, masks)
    content = torch.randn(2, 4, 16, dtype=torch.float64)
    xyzr = torch.cat([torch.rand(2, 4, 2, dtype=torch.float64) * 24, torch.rand(2, 4, 1, dtype=torch.float64) + 3,
                      torch.randn(2, 4, 1, dtype=torch.float64) * 0.3], -1)
    with torch.no_grad():
        batched = layer(content, None, xyzr, make_enc(feats, masks))
        for i, (h, w) in enumerate(sizes):
            lone_f = [f[i:i + 1, :, : math.ceil(h / s), : math.ceil(w / s)] for f, s in zip(feats, STRIDES)]
            alone = layer(content[i:i + 1], None, xyzr[i:i + 1], make_enc(lone_f))
            torch.testing.assert_close(batched[i:i + 1], alone)


def test_query_pos_given_equals_computed():
    torch.manual_seed(5)
    layer = small_layer()
    enc = make_enc([torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4)])
    content = torch.randn(1, 3, 16)
    xyzr = torch.tensor([[[10.0, 12.0, 3.0, 0.2], [20.0, 8.0, 2.5, -0.4], [5.0, 25.0, 4.0, 0.0]]])
    torch.testing.assert_close(layer(content, None, xyzr, enc),
                               layer(content, XYZRSinePosition(16)(xyzr), xyzr, enc))
