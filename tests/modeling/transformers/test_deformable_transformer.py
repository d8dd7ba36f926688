import math

import pytest
import torch

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder, get_encoder_reference_points
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.two_stage import gen_encoder_output_proposals
from codetr.modeling.transformers import DeformableTransformer

D, HEADS = 32, 4


def _logit(p):
    return math.log(p / (1 - p))


def _transformer(num_levels=2, num_queries=6, look_forward_twice=True, seed=0):
    torch.manual_seed(seed)
    kw = dict(embed_dim=D, num_heads=HEADS, num_levels=num_levels, num_points=2, ffn_dim=48)
    return DeformableTransformer(
        DeformableEncoder(2, **kw),
        DeformableDecoder(2, num_classes=3, look_forward_twice=look_forward_twice, **kw),
        num_feature_levels=num_levels, num_queries=num_queries, embed_dim=D, num_classes=3,
    ).eval()


def _randomize_box_heads(decoder):
    for box in decoder.bbox_embed:
        torch.nn.init.normal_(box.layers[-1].weight, std=0.5)


def test_encoder_reference_points_hand_computed():
    # level 0: 2 x 4 map, image covers 2 x 2 (w ratio 0.5); level 1: 1 x 2 map, covers 1 x 1
    valid_ratios = torch.tensor([[[0.5, 1.0], [0.5, 1.0]]])
    ref = get_encoder_reference_points([(2, 4), (1, 2)], valid_ratios)
    assert ref.shape == (1, 8 + 2, 2, 2)
    # position (row 1, col 1) of level 0: normalised in the image (1.5 / 2, 1.5 / 2) = (0.75, 0.75),
    # in every level's padded frame x is scaled by 0.5
    torch.testing.assert_close(ref[0, 5], torch.tensor([[0.375, 0.75], [0.375, 0.75]]))
    # the only valid cell of level 1 is the image centre
    torch.testing.assert_close(ref[0, 8], torch.tensor([[0.25, 0.5], [0.25, 0.5]]))


def test_proposals_sizes_and_invalid_positions():
    # level 0: 1 x 64 (border columns at 0.5/64 and 63.5/64 lie outside (0.01, 0.99));
    # level 1: 2 x 2 with the right column padded
    shapes = [(1, 64), (2, 2)]
    memory = torch.ones(1, 68, 3)
    mask = torch.zeros(1, 68, dtype=torch.bool)
    mask[0, 64 + 1] = mask[0, 64 + 3] = True
    out_memory, proposals, valid = gen_encoder_output_proposals(memory, mask, shapes)
    expected_valid = torch.ones(68, dtype=torch.bool)
    expected_valid[[0, 63, 65, 67]] = False
    assert torch.equal(valid[0], expected_valid)
    assert torch.isinf(proposals[0, ~expected_valid]).all()
    assert (out_memory[0, ~expected_valid] == 0).all() and (out_memory[0, expected_valid] == 1).all()
    boxes = proposals[0, expected_valid].sigmoid()
    torch.testing.assert_close(boxes[:62, 2:], torch.full((62, 2), 0.05))
    torch.testing.assert_close(boxes[62:, 2:], torch.full((2, 2), 0.1))
    expected = torch.tensor([_logit(10.5 / 64), _logit(0.5), _logit(0.05), _logit(0.05)])
    torch.testing.assert_close(proposals[0, 10], expected)
    # valid width of level 1 is 1 column: centres at x = 0.5, y = 0.25 / 0.75
    for index, y in ((64, 0.25), (66, 0.75)):
        expected = torch.tensor([0.0, _logit(y), _logit(0.1), _logit(0.1)])
        torch.testing.assert_close(proposals[0, index], expected, atol=1e-6, rtol=0)


def _inputs(n=1, sizes=((8, 8), (4, 4)), seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, D, h, w, generator=g) for h, w in sizes]
    masks = [torch.zeros(n, h, w, dtype=torch.bool) for h, w in sizes]
    return feats, masks


def _decode(tr, enc, tgt, ref, attn_mask=None):
    out = tr.decoder([QueryGroup(tgt, ref)], enc, attn_mask)
    return {"logits": out.logits, "boxes": out.boxes, "hidden": out.hidden}


def _select(tr, enc):
    group, enc_out = tr.select_queries(enc)
    return {"tgt": group.content, "ref_boxes": group.reference, "enc_boxes": enc_out["pred_boxes"]}


def _run(tr, feats, masks, attn_mask=None):
    pe = PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5)
    enc = tr.encode(feats, masks, [pe(m) for m in masks])
    sel = _select(tr, enc)
    return enc, sel, _decode(tr, enc, sel["tgt"], sel["ref_boxes"], attn_mask)


def test_query_selection_top_k_of_valid_positions():
    tr = _transformer(num_queries=10)
    feats, masks = _inputs()
    masks[0][:, :, 4:] = True  # right half padded
    masks[1][:, :, 2:] = True
    enc, sel, out = _run(tr, feats, masks)
    assert not sel["ref_boxes"].requires_grad and sel["enc_boxes"].requires_grad
    assert torch.isfinite(sel["ref_boxes"]).all() and (sel["ref_boxes"][..., :2] < 1).all()
    assert out["boxes"].shape == (2, 1, 10, 4) and out["logits"].shape == (2, 1, 10, 3)
    # the boxes are the top-10 of the encoder scores among valid positions
    _, proposals, valid = gen_encoder_output_proposals(enc.memory, enc.memory_mask, enc.shapes)
    mem = tr.enc_output_norm(tr.enc_output(enc.memory))
    scores = tr.enc_class_embed(mem).max(-1).values[0]
    scores[~valid[0]] = -float("inf")
    best = scores.argsort(descending=True)[:10]
    expected = (tr.enc_bbox_embed(mem)[0, best] + proposals[0, best]).sigmoid()
    torch.testing.assert_close(sel["ref_boxes"][0], expected)
    with pytest.raises(ValueError, match="num_queries"):
        _select(_transformer(num_queries=100), enc)


def test_look_forward_twice_semantics():
    tr = _transformer(look_forward_twice=True)
    dec = tr.decoder
    _randomize_box_heads(dec)
    feats, masks = _inputs()
    masks[0][:, 6:] = True
    masks[1][:, 3:] = True
    captured = {}
    dec.layers[0].register_forward_hook(lambda m, args, out: captured.__setitem__("o0", out))
    dec.layers[1].cross_attn.register_forward_pre_hook(lambda m, args: captured.__setitem__("ref1", args[1]))
    enc, sel, out = _run(tr, feats, masks)
    r0 = sel["ref_boxes"]
    logit = lambda x: torch.log(x.clamp(1e-3, 1 - 1e-3) / (1 - x).clamp(1e-3, 1 - 1e-3))  # noqa: E731
    # r1: refined by layer 0 from its un-normalised output
    r1 = (dec.bbox_embed[0](captured["o0"]) + logit(r0)).sigmoid()
    # layer 1's cross-attention uses r1 scaled by the valid ratios
    scale = torch.cat([enc.valid_ratios, enc.valid_ratios], -1)[:, None]
    torch.testing.assert_close(captured["ref1"], r1[:, :, None] * scale)
    assert not captured["ref1"].requires_grad  # the next layer starts from the detached box
    # predictions: layer i uses its normalised output on top of r_i
    torch.testing.assert_close(out["boxes"][0], (dec.bbox_embed[0](out["hidden"][0]) + logit(r0)).sigmoid())
    torch.testing.assert_close(out["boxes"][1], (dec.bbox_embed[1](out["hidden"][1]) + logit(r1)).sigmoid())


@pytest.mark.parametrize("look_forward_twice", [True, False])
def test_look_forward_twice_gradients(look_forward_twice):
    tr = _transformer(look_forward_twice=look_forward_twice)
    _randomize_box_heads(tr.decoder)
    feats, masks = _inputs()
    _, _, out = _run(tr, feats, masks)
    out["boxes"][1].sum().backward()  # only the second layer's prediction
    grad = tr.decoder.bbox_embed[0].layers[-1].bias.grad
    if look_forward_twice:  # reaches layer 0's box head through the undetached r_1
        assert grad is not None and grad.abs().sum() > 0
    else:
        assert grad is None or grad.abs().sum() == 0
    assert tr.decoder.bbox_embed[1].layers[-1].bias.grad.abs().sum() > 0


def test_decoder_attention_mask_blocks_groups():
    tr = _transformer(num_queries=6)
    feats, masks = _inputs()
    pe = PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5)
    enc = tr.encode(feats, masks, [pe(m) for m in masks])
    tgt = torch.randn(1, 6, D)
    ref = torch.rand(1, 6, 4) * 0.5 + 0.25
    blocked = torch.zeros(6, 6, dtype=torch.bool)
    blocked[3:, :3] = True  # queries 3..5 may not see 0..2
    blocked[0, :] = True  # a fully blocked row (still sees itself, no NaN)
    out = _decode(tr, enc, tgt, ref, blocked)
    assert torch.isfinite(out["boxes"]).all() and torch.isfinite(out["logits"]).all()
    tgt2, ref2 = tgt.clone(), ref.clone()
    tgt2[:, :3] += 1.0
    ref2[:, :3] = ref2[:, :3].flip(-1)
    out2 = _decode(tr, enc, tgt2, ref2, blocked[None])  # (N, Q, Q) works too
    torch.testing.assert_close(out2["boxes"][:, :, 3:], out["boxes"][:, :, 3:])
    torch.testing.assert_close(out2["logits"][:, :, 3:], out["logits"][:, :, 3:])
    assert not torch.allclose(out2["boxes"][:, :, :3], out["boxes"][:, :, :3])


def test_transformer_batched_equals_single():
    tr = _transformer(num_queries=8)
    feats_a, masks_a = _inputs(sizes=((8, 8), (4, 4)), seed=1)
    feats_b, masks_b = _inputs(sizes=((4, 6), (2, 3)), seed=2)
    feats = [torch.randn(2, D, 8, 8), torch.randn(2, D, 4, 4)]  # garbage in the padding
    masks = [torch.ones(2, 8, 8, dtype=torch.bool), torch.ones(2, 4, 4, dtype=torch.bool)]
    for lvl, (fa, fb) in enumerate(zip(feats_a, feats_b)):
        feats[lvl][0] = fa[0]
        feats[lvl][1, :, : fb.shape[2], : fb.shape[3]] = fb[0]
        masks[lvl][0] = False
        masks[lvl][1, : fb.shape[2], : fb.shape[3]] = False
    _, _, batched = _run(tr, feats, masks)
    for i, (f, m) in enumerate(((feats_a, masks_a), (feats_b, masks_b))):
        _, _, single = _run(tr, f, m)
        # same predictions up to the order of the selected queries
        for key in ("boxes", "logits"):
            b = batched[key][-1, i]
            s = single[key][-1, 0]
            order_b, order_s = b[:, 0].argsort(), s[:, 0].argsort()
            torch.testing.assert_close(b[order_b], s[order_s], atol=1e-4, rtol=1e-4)
