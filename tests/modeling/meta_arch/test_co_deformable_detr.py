"""Co-Deformable-DETR (Deformable-DETR++ on the DINO framework): given query positions fixed
across decoder layers, no final decoder norm, ``pos_trans`` query positions, top-k by class 0,
binary encoder loss on all positions, Co-Deformable positive queries with ``head_pos_embed``,
and a training step of a tiny Co-Deformable CoDETR. Checked against independent computations."""
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from codetr.modeling.heads.tood_head import TOODHead
from codetr.modeling.meta_arch import DINO, CoDETR
from codetr.modeling.necks import ChannelMapper
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.denoising import dino_denoising
from codetr.modeling.queries.positive_queries import PositiveQueries, select_positive_queries
from codetr.modeling.queries.two_stage import gen_encoder_output_proposals
from codetr.modeling.transformers import DeformableTransformer
from support.matching import brute_force_assignment
from support.models import BATCH, RES2_RES5, PatchBackbone, make_input

HERE = os.path.dirname(os.path.abspath(__file__))
for _dir in (os.path.dirname(HERE), os.path.join(os.path.dirname(HERE), "queries")):  # shared test helpers
    if _dir not in sys.path:
        sys.path.insert(0, _dir)

from test_criterion import GT, expected_losses, focal, iou_giou  # noqa: E402
from test_positive_queries import SIZES, make_samples, sine  # noqa: E402

D, K, HEADS = 32, 3, 4


def _logit(x):
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=1e-3) / (1 - x).clamp(min=1e-3))


def deformable_transformer(num_queries=6, num_levels=2, seed=0, **kw):
    torch.manual_seed(seed)
    layer = dict(embed_dim=D, num_heads=HEADS, num_levels=num_levels, num_points=2, ffn_dim=48)
    decoder = DeformableDecoder(2, num_classes=K, look_forward_twice=True, ref_point_head=False, post_norm=False,
                                **layer)
    opts = dict(select_by="first_class", enc_outputs="all")
    opts.update(kw)
    return DeformableTransformer(
        DeformableEncoder(1, **layer), decoder, num_feature_levels=num_levels, num_queries=num_queries,
        embed_dim=D, num_classes=K, **opts,
    ).eval()


def _encode(tr, seed=1, sizes=((8, 8), (4, 4)), pad=False):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, D, h, w, generator=g) for h, w in sizes]
    masks = [torch.zeros(1, h, w, dtype=torch.bool) for h, w in sizes]
    if pad:
        masks[0][:, :, 6:] = True
        masks[1][:, :, 3:] = True
    pe = PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5)
    return tr.encode(feats, masks, [pe(m) for m in masks])


def _decode(tr, enc, groups, attn_mask=None):
    out = tr.decoder(groups, enc, attn_mask)
    return {"logits": out.logits, "boxes": out.boxes, "hidden": out.hidden}


def _select(tr, enc):
    group, enc_out = tr.select_queries(enc)
    return {"tgt": group.content, "ref_boxes": group.reference, "query_pos": group.query_pos,
            "enc_logits": enc_out["pred_logits"], "enc_boxes": enc_out["pred_boxes"]}


# ----------------------------------------------------------------------------- decoder
def test_decoder_given_query_pos_is_used_unchanged_and_heads_read_raw_outputs():
    tr = deformable_transformer()
    dec = tr.decoder
    assert dec.ref_point_head is None and dec.norm is None
    assert not any(n.startswith(("ref_point_head", "norm")) for n, _ in dec.named_parameters())
    for box in dec.bbox_embed:  # non-trivial refinement
        torch.nn.init.normal_(box.layers[-1].weight, std=0.5)
    enc = _encode(tr, pad=True)
    g = torch.Generator().manual_seed(3)
    tgt, pos = torch.randn(1, 5, D, generator=g), torch.randn(1, 5, D, generator=g)
    ref = torch.rand(1, 5, 4, generator=g) * 0.5 + 0.25
    seen, outs = [], []
    for layer in dec.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
        layer.register_forward_hook(lambda m, args, out: outs.append(out))
    out = _decode(tr, enc, [QueryGroup(tgt, ref, pos)])
    assert len(seen) == 2 and all(p is pos for p in seen)  # the very same tensor at every layer
    # heads on the raw layer outputs, look-forward-twice references
    r0 = ref
    r1 = (dec.bbox_embed[0](outs[0]) + _logit(r0)).sigmoid()
    for i, (o, r) in enumerate(zip(outs, (r0, r1))):
        torch.testing.assert_close(out["hidden"][i], o)
        torch.testing.assert_close(out["logits"][i], F.linear(o, dec.class_embed[i].weight, dec.class_embed[i].bias))
        torch.testing.assert_close(out["boxes"][i], (dec.bbox_embed[i](o) + _logit(r)).sigmoid())
    # a different query_pos changes the outputs (it is used), none is an error
    assert not torch.allclose(_decode(tr, enc, [QueryGroup(tgt, ref, pos + 1)])["logits"], out["logits"])
    with pytest.raises(ValueError, match="query_pos"):
        _decode(tr, enc, [QueryGroup(tgt, ref)])


def test_query_positions_are_chosen_per_group_and_options_are_checked():
    layer = dict(embed_dim=D, num_heads=HEADS, num_levels=2, num_points=2, ffn_dim=48)
    dec = DeformableDecoder(1, num_classes=K, **layer)
    # a decoder with a ref_point_head: a group with its own positions keeps them, a group without
    # takes ref_point_head(reference)
    dino_style = DeformableTransformer(DeformableEncoder(1, **layer), dec, num_feature_levels=2, num_queries=4,
                                       embed_dim=D, num_classes=K)
    enc = _encode(dino_style)
    g = torch.Generator().manual_seed(4)
    ref_a, ref_b = torch.rand(1, 3, 4, generator=g) * 0.5 + 0.25, torch.rand(1, 2, 4, generator=g) * 0.5 + 0.25
    pos_b = torch.randn(1, 2, D, generator=g)
    seen = []
    dec.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    dec([QueryGroup(torch.randn(1, 3, D, generator=g), ref_a), QueryGroup(torch.randn(1, 2, D, generator=g), ref_b,
                                                                           pos_b)], enc)
    e = sine(ref_a, D // 2)  # DINO's order: y, x, w, h
    e = torch.cat([e[..., D // 2:D], e[..., :D // 2], e[..., D:]], -1)
    head = dec.ref_point_head.layers
    torch.testing.assert_close(seen[0][:, :3], head[1](head[0](e).relu()), atol=1e-5, rtol=1e-4)
    assert torch.equal(seen[0][:, 3:], pos_b)
    with pytest.raises(ValueError, match="coordinates"):
        dec([QueryGroup(torch.zeros(1, 2, D), torch.full((1, 2, 2), 0.5))], enc)
    # the decoder decides who computes the matching positions: pos_trans exists only without ref_point_head
    assert not dino_style.proposal_positions and not hasattr(dino_style, "pos_trans")
    assert dino_style.select_queries(enc)[0].query_pos is None
    assert deformable_transformer().proposal_positions and hasattr(deformable_transformer(), "pos_trans")
    backbone = PatchBackbone(levels=RES2_RES5)
    with pytest.raises(ValueError, match="denoising queries take their positions from the decoder's ref_point_head"):
        DINO(backbone=backbone, position_embedding=PositionEmbeddingSine(D // 2, normalize=True),
             neck=ChannelMapper(backbone.output_shape(), ["res4", "res5"], D, num_outs=2, num_groups=8),
             transformer=deformable_transformer(), criterion=DETRCriterion(K), denoising=dino_denoising(K, D, 10),
             num_classes=K)
    with pytest.raises(ValueError, match="select_by"):
        deformable_transformer(select_by="min")


# ----------------------------------------------------------------------------- query selection
def test_pos_trans_query_position_hand_computed():
    tr = deformable_transformer(num_queries=6)
    assert tr.pos_trans.weight.shape == (2 * D, 2 * D) and tr.pos_trans_norm.weight.shape == (2 * D,)
    enc = _encode(tr)
    sel = _select(tr, enc)
    box = sel["ref_boxes"]
    assert not box.requires_grad and sel["query_pos"].shape == (1, 6, D)
    embed = sine(box, D // 2)  # cx, cy, w, h, D / 2 channels each, written out in the test
    full = F.layer_norm(F.linear(embed, tr.pos_trans.weight, tr.pos_trans.bias), (2 * D,),
                        tr.pos_trans_norm.weight, tr.pos_trans_norm.bias)
    torch.testing.assert_close(sel["query_pos"], full[..., :D], atol=1e-5, rtol=1e-4)
    # content: the learned embedding, for every image
    torch.testing.assert_close(sel["tgt"][0], tr.tgt_embed.weight)


def test_select_by_first_class_and_encoder_outputs_of_all_positions():
    tr = deformable_transformer(num_queries=5)
    with torch.no_grad():  # make class 0 disagree with the max over classes
        tr.enc_class_embed.weight.normal_(std=2.0)
        tr.enc_class_embed.bias.copy_(torch.tensor([0.0, 3.0, -1.0]))
    enc = _encode(tr, pad=True)
    sel = _select(tr, enc)
    _, proposals, valid = gen_encoder_output_proposals(enc.memory, enc.memory_mask, enc.shapes)
    memory = enc.memory.masked_fill(~valid[..., None], 0.0)
    out_memory = tr.enc_output_norm(tr.enc_output(memory))
    logits = tr.enc_class_embed(out_memory)[0]
    boxes = (tr.enc_bbox_embed(out_memory)[0] + proposals[0]).sigmoid()
    first = logits[:, 0].masked_fill(~valid[0], -float("inf"))
    best = sorted(range(len(first)), key=lambda i: -first[i].item())[:5]
    torch.testing.assert_close(sel["ref_boxes"][0], boxes[best])
    by_max = logits.max(-1).values.masked_fill(~valid[0], -float("inf")).topk(5).indices.tolist()
    assert set(by_max) != set(best)  # the two rules differ on this case
    # encoder outputs of every position (S of them), for the encoder loss
    s = enc.memory.shape[1]
    assert sel["enc_logits"].shape == (1, s, K) and sel["enc_boxes"].shape == (1, s, 4)
    torch.testing.assert_close(sel["enc_logits"][0], logits)
    torch.testing.assert_close(sel["enc_boxes"][0], boxes)
    assert (sel["enc_boxes"][0][~valid[0]] == 1).all()  # +inf proposal logits


# ----------------------------------------------------------------------------- binary encoder loss
# encoder outputs of 4 positions per image: position 1 fits ground truth 0 of image 0 in the box
# but scores class 2 (its true label); position 3 has a slightly worse box but scores class 0.
ENC_LOGITS = [
    [[-2.0, -2.0, -1.5], [-3.0, -2.0, 3.0], [2.0, -2.0, -2.0], [2.5, -2.0, -2.0]],
    [[-1.0, 2.0, -2.0], [1.5, -2.0, -1.0], [-2.0, -2.0, -2.0], [0.0, 0.0, 0.0]],
]
ENC_BOXES = [
    [[0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2], [0.69, 0.61, 0.3, 0.2], [0.32, 0.28, 0.22, 0.2]],
    [[0.5, 0.5, 0.4, 0.4], [0.48, 0.52, 0.4, 0.38], [0.9, 0.9, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]],
]


def brute_force_matching(logits, boxes, targets):
    """{(b, q): (label, box) or None}: the minimum-cost injective assignment by enumeration
    (focal class cost 2, L1 5, GIoU 2), all queries listed."""
    out = {}
    for b, t in enumerate(targets):
        labels, gts = t["labels"].tolist(), t["boxes"].tolist()
        q = len(logits[b])

        def cost(qi, g):
            x = logits[b][qi][labels[g]]
            cls = focal(x, True) - focal(x, False)
            l1 = sum(abs(p - v) for p, v in zip(boxes[b][qi], gts[g]))
            return 2 * cls + 5 * l1 - 2 * iou_giou(boxes[b][qi], gts[g])[1]

        best, _ = brute_force_assignment(cost, q, len(gts))
        out.update({(b, qi): None for qi in range(q)})
        out.update({(b, qi): (labels[g], gts[g]) for g, qi in enumerate(best)})
    return out


def assert_losses(actual, expected, suffix=""):
    # rel 1e-4: the implementation's IoU has an eps of 1e-7 on unions of ~0.04 (small boxes)
    for name, value in expected.items():
        assert actual[name + suffix].item() == pytest.approx(value, rel=1e-4, abs=1e-6), name + suffix


def test_binary_encoder_loss_equals_loss_with_all_labels_zero():
    outputs = {
        "pred_logits": torch.tensor(ENC_LOGITS), "pred_boxes": torch.tensor(ENC_BOXES),
        "enc_outputs": {"pred_logits": torch.tensor(ENC_LOGITS), "pred_boxes": torch.tensor(ENC_BOXES)},
    }
    binary = DETRCriterion(K, binary_enc_loss=True)(outputs, GT)
    plain = DETRCriterion(K)(outputs, GT)
    zero = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in GT]
    zero_matching = brute_force_matching(ENC_LOGITS, ENC_BOXES, zero)
    true_matching = brute_force_matching(ENC_LOGITS, ENC_BOXES, GT)
    assert zero_matching != true_matching  # the labels change the matching here
    assert_losses(binary, expected_losses(ENC_LOGITS, ENC_BOXES, zero_matching, normalizer=3), "_enc")
    assert_losses(plain, expected_losses(ENC_LOGITS, ENC_BOXES, true_matching, normalizer=3), "_enc")
    # the decoder layers keep the true labels
    assert_losses(binary, expected_losses(ENC_LOGITS, ENC_BOXES, true_matching, normalizer=3))
    assert GT[0]["labels"].tolist() == [2, 0]  # the targets are not modified in place


# ----------------------------------------------------------------------------- positive queries
@pytest.mark.parametrize("with_feats", [False, True])
def test_co_deformable_positive_queries_hand_computed(with_feats):
    torch.manual_seed(0)
    d = 16
    pq = PositiveQueries(num_heads=2, embed_dim=d, num_classes=K, feat_dim=6 if with_feats else None,
                         style="co_deformable", head_pos_embed="scalar")
    assert pq.pos_trans[0].weight.shape == (2 * d, 2 * d) and pq.pos_trans_norm[1].weight.shape == (2 * d,)
    emb = pq.head_pos_embed
    assert emb.weight.shape == (2, 1) and emb.padding_idx == 1  # official nn.Embedding(2, 1, 1, 256)
    assert (emb.weight != 0).all()  # the official Xavier re-initialisation also fills the padding row
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[0.75], [-1.25]]))
    samples = make_samples([3, 1], [20, 3], feats=with_feats)
    for k, scalar in ((0, 0.75), (1, -1.25)):
        fixed = pq(samples, k, SIZES, generator=torch.Generator().manual_seed(0))
        sel = select_positive_queries(samples, SIZES, K, 300, 9, generator=torch.Generator().manual_seed(0))
        full = F.layer_norm(F.linear(sine(fixed.ref_boxes, d // 2), pq.pos_trans[k].weight, pq.pos_trans[k].bias),
                            (2 * d,), pq.pos_trans_norm[k].weight, pq.pos_trans_norm[k].bias)
        content = full[..., d:]
        if with_feats:
            content = content + F.layer_norm(F.linear(sel["feats"], pq.feat_trans[k].weight, pq.feat_trans[k].bias),
                                              (d,), pq.feat_trans_norm[k].weight, pq.feat_trans_norm[k].bias)
        valid = fixed.valid[..., None]
        torch.testing.assert_close(fixed.content, content * valid, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fixed.query_pos, (full[..., :d] + scalar) * valid, atol=1e-5, rtol=1e-4)
        assert (fixed.query_pos[1, 4:] == 0).all()  # padded slots


def test_head_pos_embed_rows_are_trained_by_their_own_head_only():
    pq = PositiveQueries(num_heads=2, embed_dim=8, num_classes=K, style="co_deformable", head_pos_embed="scalar")
    samples = make_samples([3, 2], [20, 20])
    for k in (0, 1):
        pq.zero_grad()
        pq(samples, k, SIZES, generator=torch.Generator().manual_seed(0)).query_pos.sum().backward()
        grad = pq.head_pos_embed.weight.grad[:, 0]
        # d(sum query_pos) / d(weight[k]) = number of valid slots x channels; the other row: 0
        n_valid = 2 * 9 * 8
        torch.testing.assert_close(grad, torch.tensor([n_valid, 0.0] if k == 0 else [0.0, n_valid]))


def test_positive_query_options():
    assert PositiveQueries(2, 8, K, style="co_deformable", head_pos_embed="vector").head_pos_embed.weight.shape == (2, 8)
    assert PositiveQueries(1, 8, K, style="co_deformable", head_pos_embed="scalar").head_pos_embed.padding_idx is None
    none = PositiveQueries(2, 8, K, style="co_deformable")
    assert none.head_pos_embed is None
    fixed = none(make_samples([3, 2], [20, 20]), 1, SIZES)
    assert fixed.query_pos.shape == fixed.content.shape == (2, 9, 8)
    assert PositiveQueries(2, 8, K)(make_samples([3, 2], [20, 20]), 0, SIZES).query_pos is None  # Co-DINO
    with pytest.raises(ValueError, match="style"):
        PositiveQueries(2, 8, K, style="dino")
    with pytest.raises(ValueError, match="head_pos_embed"):
        PositiveQueries(2, 8, K, head_pos_embed="scalar")  # Co-DINO has none


def test_t_head_samples_drive_co_deformable_positive_queries():
    """A T-Head built with ``return_features`` hands Co-Deformable-DETR's positive queries its
    positives with the pyramid feature at each anchor: the content is ``LN(Linear(sine(box)))``
    plus ``LN(Linear(feature))`` of those features, and the gradient reaches the pyramid."""
    from detectron2.structures import Boxes, ImageList, Instances

    torch.manual_seed(0)
    d = 16
    head = TOODHead(K, ["p3", "p4"], [8, 16], in_channels=d, feat_channels=d, stacked_convs=2, num_groups=4,
                    return_features=True).train()
    pq = PositiveQueries(1, d, K, feat_dim=d, style="co_deformable", head_pos_embed="scalar")
    pyramid = {"p3": torch.randn(2, d, 8, 8, requires_grad=True), "p4": torch.randn(2, d, 4, 4, requires_grad=True)}
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (56, 48)])
    gts = []
    for size, boxes, labels in (((64, 64), [[5, 6, 40, 30], [20, 18, 60, 62]], [0, 2]),
                                ((56, 48), [[10, 10, 40, 45]], [1])):
        gts.append(Instances(size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                             gt_classes=torch.tensor(labels)))
    _, samples = head(images, pyramid, gts)
    fixed = pq(samples, 0, images.image_sizes, generator=torch.Generator().manual_seed(0))
    # independently: a positive's feature = the pyramid map of its anchor's level (side 8 x stride)
    # at its centre / stride; with fewer positives than slots they fill the first slots in order
    def feature_at(b, box):
        stride = round(float(box[2] - box[0]) / 8)
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
        return pyramid["p3" if stride == 8 else "p4"][b, :, round(cy / stride), round(cx / stride)]

    full = F.layer_norm(F.linear(sine(fixed.ref_boxes, d // 2), pq.pos_trans[0].weight, pq.pos_trans[0].bias),
                        (2 * d,), pq.pos_trans_norm[0].weight, pq.pos_trans_norm[0].bias)
    for b in range(2):
        p = len(samples.pos_boxes[b])
        assert 0 < p <= fixed.content.shape[1] and fixed.positive[b, :p].all() and not fixed.positive[b, p:].any()
        feats = torch.stack([feature_at(b, box) for box in samples.pos_boxes[b]])
        content = full[b, :p, d:] + F.layer_norm(F.linear(feats, pq.feat_trans[0].weight, pq.feat_trans[0].bias),
                                                 (d,), pq.feat_trans_norm[0].weight, pq.feat_trans_norm[0].bias)
        torch.testing.assert_close(fixed.content[b, :p], content, atol=1e-5, rtol=1e-4)
    fixed.content.sum().backward()
    assert pyramid["p3"].grad.abs().sum() > 0 and pq.feat_trans[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the detector
def tiny_co_deformable_detr(seed=0, one_stage="atss"):
    """4 scales (strides 8..64) + p7, Faster R-CNN and ATSS (or T-Head) heads with features, 20
    queries."""
    torch.manual_seed(seed)
    backbone = PatchBackbone(levels=RES2_RES5)
    kw = dict(embed_dim=D, num_heads=4, num_levels=4, num_points=2, ffn_dim=64)
    transformer = DeformableTransformer(
        DeformableEncoder(1, **kw),
        DeformableDecoder(2, num_classes=K, ref_point_head=False, post_norm=False, **kw),
        num_feature_levels=4, num_queries=20, embed_dim=D, num_classes=K,
        select_by="first_class", enc_outputs="all",
    )
    det = DINO(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5),
        neck=ChannelMapper(backbone.output_shape(), ["res3", "res4", "res5"], D, num_outs=4, num_groups=8),
        transformer=transformer,
        criterion=DETRCriterion(K, class_loss="focal", weight_class=2.0, binary_enc_loss=True),
        denoising=None,
        select_box_nums_for_evaluation=10,
        num_classes=K,
    )
    names, strides = ["p3", "p4", "p5", "p6", "p7"], [8, 16, 32, 64, 128]
    aux = [
        build_rcnn_aux_head(K, names, strides, in_channels=D, num_roi_levels=4, fc_dim=32, pre_nms_topk=(200, 100),
                            post_nms_topk=(100, 100), roi_batch_size_per_image=64, return_features=True),
        ATSSHead(K, names, strides, in_channels=D, feat_channels=D, num_groups=8, loss_scale=12.0,
                 return_features=True)
        if one_stage == "atss" else
        TOODHead(K, names, strides, in_channels=D, feat_channels=D, stacked_convs=2, num_groups=8, loss_scale=12.0,
                 return_features=True),
    ]
    pq = PositiveQueries(2, D, K, feat_dim=D, style="co_deformable", head_pos_embed="scalar")
    return CoDETR(det, aux, pq, pyramid_num_groups=8)


@pytest.mark.parametrize("one_stage", ["atss", "thead"])
def test_co_deformable_detr_training_step(one_stage):
    model = tiny_co_deformable_detr(one_stage=one_stage).train()
    seen = {}
    criterion = model.detector.criterion
    forward = criterion.forward
    criterion.forward = lambda outputs, targets, dn=None: seen.update(enc=outputs["enc_outputs"]) or forward(
        outputs, targets, dn)
    losses = model(BATCH)
    # the encoder loss covers every encoder position (64 x 128 batch: 8x16 + 4x8 + 2x4 + 1x2)
    assert seen["enc"]["pred_logits"].shape == (2, 128 + 32 + 8 + 2, K)
    names = {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("", "_0", "_enc", "_aux0", "_aux0_0",
                                                                          "_aux1", "_aux1_0")}
    assert names <= set(losses) and not any("_dn" in k for k in losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    for name in ("detector.transformer.pos_trans.weight", "detector.transformer.pos_trans_norm.weight",
                 "positive_queries.pos_trans.0.weight", "positive_queries.pos_trans.1.weight",
                 "positive_queries.feat_trans.0.weight", "positive_queries.feat_trans.1.weight",
                 "positive_queries.head_pos_embed.weight", "detector.transformer.tgt_embed.weight"):
        assert name in grads and grads[name].abs().sum() > 0, name
    assert (grads["positive_queries.head_pos_embed.weight"] != 0).all()  # both heads' rows
    keys = model.state_dict().keys()
    assert not any("ref_point_head" in k or k.startswith("detector.transformer.decoder.norm.") for k in keys)
    # inference: the detector alone, 10 detections per image
    model.eval()
    with torch.no_grad():
        out = model([make_input(64, 96, seed=5)])
    assert len(out[0]["instances"]) == 10


def test_co_deformable_pieces_must_fit_together():
    model = tiny_co_deformable_detr()
    det = model.detector
    with pytest.raises(ValueError, match="style"):
        CoDETR(det, list(model.aux_heads), PositiveQueries(2, D, K, feat_dim=D), pyramid_num_groups=8)
    with pytest.raises(ValueError, match="denoising"):
        DINO(det.backbone, det.position_embedding, det.neck, det.transformer, DETRCriterion(K, with_dn=True),
             denoising=dino_denoising(K, D, num_dn_queries=10))
