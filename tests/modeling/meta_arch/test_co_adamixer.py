"""Co-DETR around the AdaMixer family (DEQDet, RNNDet, AdaMixer) on tiny models (CPU, seconds):
fixed-target query groups through the refiner, their isolation by the attention mask, the
auxiliary pyramid on the neck maps, training with positive queries, inference = the detector."""
import pytest
import torch

from codetr.modeling.coders import xyzr_to_cxcywh
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner, SequentialRefinement, adamixer_layers
from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import AdaMixer, CoDETR, DEQDet, RNNDet
from codetr.modeling.necks.shared_norm_mapper import SharedNormChannelMapper
from codetr.modeling.queries.fixed_target import FixedTargetQueries
from codetr.modeling.queries.whole_image import WholeImageQueries
from codetr.modeling.queries.positive_queries import PositiveQueries
from support.adamixer import randomise
from support.models import BATCH, RES2_RES5, PatchBackbone, make_input


D, K, Q = 16, 3, 6
STRIDES = (4, 8, 16, 32)  # res2..res5: the auxiliary pyramid is p2..p6
LOOPS = {
    DEQDet: lambda: FixedPointRefinement(refinement_steps=3, supervision_positions=(1, 3), inference_steps=3),
    RNNDet: lambda: UnrolledRefinement(2),
    AdaMixer: lambda: SequentialRefinement(2),
}


def tiny_detector(cls=DEQDet, seed=0):
    torch.manual_seed(seed)
    backbone = PatchBackbone(levels=RES2_RES5)
    layers = adamixer_layers(2, embed_dim=D, num_heads=2, ffn_dim=32, num_groups=2, in_points=4, out_points=3,
                             strides=STRIDES)
    xyxy = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, l1_box_format="xyxy")
    model = cls(
        backbone=backbone,
        neck=SharedNormChannelMapper(backbone.output_shape(), ["res2", "res3", "res4", "res5"], D, num_groups=4),
        queries=WholeImageQueries(Q, D),
        decoder=AdaMixerRefiner(layers, K, LOOPS[cls]()),
        criterion=DETRCriterion(K, matcher=xyxy, weight_class=2.0, l1_box_format="xyxy"),
        num_classes=K,
        select_box_nums_for_evaluation=Q,
    )
    return randomise(model)  # non-trivial sampling, mixing and box heads (the official init zeroes them)


def tiny_co(cls=DEQDet, seed=0, **kw):
    det = tiny_detector(cls, seed)
    names = [f"p{i}" for i in range(2, 7)]
    atss = ATSSHead(K, names, [2**i for i in range(2, 7)], in_channels=D, feat_channels=D, num_groups=4,
                    loss_scale=12.0)
    return CoDETR(det, [atss], PositiveQueries(1, D, K), pyramid_num_groups=4, num_classes=K, num_queries=Q, **kw)


def fixed_queries(n=2, slots=5, seed=3):
    """A hand-made fixed-target group: random contents and boxes, image 0 with its last two slots
    padded, image 1 with its first one (the attention mask differs per image)."""
    g = torch.Generator().manual_seed(seed)
    valid = torch.ones(n, slots, dtype=torch.bool)
    valid[0, -2:] = False
    valid[1, 0] = False
    centres = 0.2 + 0.6 * torch.rand(n, slots, 2, generator=g)
    ref = torch.cat([centres, 0.1 + 0.4 * torch.rand(n, slots, 2, generator=g)], -1)
    labels = torch.where(valid, torch.randint(0, K, (n, slots), generator=g), torch.full((n, slots), K))
    return FixedTargetQueries(
        content=torch.randn(n, slots, D, generator=g) * valid[..., None], ref_boxes=ref, labels=labels,
        boxes=ref * valid[..., None], valid=valid, positive=valid.clone(), num_groups=1, group_size=slots,
    )


def _decode(model, enc, groups, mask=None):
    with torch.no_grad():
        return model.decode(enc, groups, mask)


def test_fixed_group_reference_is_its_boxes_in_pixels():
    model = tiny_detector().eval()
    with torch.no_grad():
        enc = model.encode(model.preprocess_image(BATCH))
    fixed = fixed_queries()
    group = model.fixed_group(fixed, enc)
    assert group.content is fixed.content and group.query_pos is None
    wh = torch.tensor([[64.0, 64.0], [128.0, 64.0]])  # each unpadded image's (w, h)
    torch.testing.assert_close(xyzr_to_cxcywh(group.reference), fixed.ref_boxes * torch.cat([wh, wh], -1)[:, None])


@pytest.mark.parametrize("cls", [DEQDet, RNNDet, AdaMixer])
def test_groups_decoded_together_equal_each_group_alone(cls):
    """With both directions blocked between the groups, the fixed part of one decoder call over
    [fixed, matching] equals the fixed group alone (with its own mask) and the matching part the
    matching queries alone: outputs split per group, every layer output."""
    model = tiny_detector(cls).double().eval()
    model.pixel_mean, model.pixel_std = model.pixel_mean.double(), model.pixel_std.double()
    model.aux_loss = True
    with torch.no_grad():
        enc = model.encode(model.preprocess_image(BATCH))
    fixed = fixed_queries()
    fixed.content, fixed.ref_boxes = fixed.content.double(), fixed.ref_boxes.double()
    matching, _ = model.matching_queries(enc, fixed)
    mask = fixed.attn_mask(Q)
    mask[:, : fixed.num_queries, fixed.num_queries:] = True  # fixed cannot see matching either
    both = _decode(model, enc, [model.fixed_group(fixed, enc), matching], mask)
    fixed_alone = _decode(model, enc, [model.fixed_group(fixed, enc)], fixed.attn_mask(0))[0]
    matching_alone = _decode(model, enc, [matching])[0]
    for got, expected in ((both[0], fixed_alone), (both[1], matching_alone)):
        for key in ("pred_logits", "pred_boxes"):
            torch.testing.assert_close(got[key], expected[key])
    assert both[0]["pred_boxes"].shape == (2, fixed.num_queries, 4) and both[1]["pred_boxes"].shape == (2, Q, 4)
    # the single-group path is the refiner on the group itself
    assert not torch.allclose(fixed_alone["pred_boxes"], _decode(model, enc, [model.fixed_group(fixed, enc)])[0][
        "pred_boxes"]), "the padded slots should matter without the mask"


def test_attention_mask_isolates_the_groups():
    """``forward_queries(enc, fixed)`` (DINO's layout and mask): perturbing the fixed queries
    leaves the matching outputs unchanged; perturbing padded fixed slots leaves every valid
    output unchanged (masked as keys per image); the fixed queries do see the matching ones."""
    model = tiny_detector().double().eval()
    model.pixel_mean, model.pixel_std = model.pixel_mean.double(), model.pixel_std.double()
    with torch.no_grad():
        enc = model.encode(model.preprocess_image(BATCH))

    def run(fixed):
        fixed.content, fixed.ref_boxes = fixed.content.double(), fixed.ref_boxes.double()
        with torch.no_grad():
            return model.forward_queries(enc, fixed)

    base = run(fixed_queries())
    base_valid = fixed_queries().valid
    other = fixed_queries(seed=7)  # other contents and boxes, the same padding
    other.content = other.content * base_valid[..., None]
    other.valid, other.positive = base_valid, base_valid.clone()
    changed = run(other)
    torch.testing.assert_close(changed["pred_logits"], base["pred_logits"])
    torch.testing.assert_close(changed["pred_boxes"], base["pred_boxes"])
    assert not torch.allclose(changed["dn_outputs"]["pred_boxes"], base["dn_outputs"]["pred_boxes"])

    padded = fixed_queries()
    g = torch.Generator().manual_seed(11)
    padded.content = padded.content + torch.randn(padded.content.shape, generator=g) * (~base_valid)[..., None]
    padded.ref_boxes = torch.where(base_valid[..., None], padded.ref_boxes, torch.full_like(padded.ref_boxes, 0.3))
    out = run(padded)
    torch.testing.assert_close(out["pred_boxes"], base["pred_boxes"])
    for key in ("pred_boxes", "pred_logits"):
        torch.testing.assert_close(out["dn_outputs"][key][base_valid], base["dn_outputs"][key][base_valid])

    model.queries.content.data.normal_()  # the matching queries change: the fixed ones see them
    moved = run(fixed_queries())
    assert not torch.allclose(moved["dn_outputs"]["pred_logits"], base["dn_outputs"]["pred_logits"])


def test_pyramid_is_the_neck_maps_plus_one_level():
    model = tiny_co().train()
    assert model.pyramid_names == ["p2", "p3", "p4", "p5", "p6"]
    det = model.detector
    with torch.no_grad():
        enc = det.encode(det.preprocess_image(BATCH))
        pyramid = model.pyramid(enc)
    assert list(pyramid) == model.pyramid_names
    for (name, x), m in zip(list(pyramid.items())[:-1], enc.memory_maps()):
        assert torch.equal(x, m), name
    assert pyramid["p6"].shape == (2, D, 1, 2)
    with torch.no_grad():  # image 0 (64 x 64 in a 64 x 128 batch) alone: its valid part of every level
        alone = model.pyramid(det.encode(det.preprocess_image(BATCH[:1])))
    for name, x in alone.items():
        h, w = x.shape[-2:]
        torch.testing.assert_close(pyramid[name][:1, :, :h, :w], x, msg=name)


@pytest.mark.parametrize("cls,num_outputs", [(DEQDet, 5), (RNNDet, 3), (AdaMixer, 2)])
def test_training_with_positive_queries(cls, num_outputs):
    """Finite losses for the detector, the ATSS head and the positive queries on every
    supervised output; every parameter gets a gradient; the positive-query losses reach the
    positive-query projection and the refiner."""
    model = tiny_co(cls).train()
    calls = []
    decode_fixed = model.detector.decode_fixed

    def spy(enc, fixed):
        out = decode_fixed(enc, fixed)
        calls.append((fixed, out))
        return out

    model.detector.decode_fixed = spy
    losses = model(BATCH)
    suffixes = [""] + [f"_{i}" for i in range(num_outputs - 1)]
    detr = {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in suffixes}
    aux = {f"loss_{n}_aux0{s}" for n in ("class", "bbox", "giou") for s in suffixes}
    assert set(losses) == detr | aux | {"loss_cls_head0", "loss_bbox_head0", "loss_centerness_head0"}
    assert all(torch.isfinite(v) for v in losses.values())
    (fixed, out), = calls
    assert fixed.positive.any() and out["pred_boxes"].shape[:2] == fixed.labels.shape
    assert losses["loss_giou_aux0"] > 0 and losses["loss_class_aux0"] > 0
    sum(v for k, v in losses.items() if "_aux0" in k).backward(retain_graph=True)
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {n for n, _ in model.positive_queries.named_parameters(prefix="positive_queries")} <= got
    assert any(n.startswith("detector.decoder.layers.0.") for n in got)
    assert any(n.startswith("detector.decoder.layers.1.") for n in got)
    model.zero_grad()
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_images_without_boxes_train():
    model = tiny_co().train()
    losses = model([make_input(64, 64, seed=8), make_input(64, 96, seed=9)])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_inference_equals_the_detector_alone():
    model = tiny_co().eval()
    alone = tiny_detector(seed=1).eval()
    alone.load_state_dict(model.detector.state_dict())

    def fail(*_):
        raise AssertionError("an auxiliary module ran at inference")

    for m in (model.aux_heads[0], model.positive_queries, model.downsample):
        m.register_forward_pre_hook(fail)
    inputs = [make_input(64, 64, seed=3, orig=(128, 96)), make_input(64, 128, seed=4)]
    with torch.no_grad():
        got, expected = model(inputs), alone(inputs)
    for g, e in zip(got, expected):
        g, e = g["instances"], e["instances"]
        assert len(g) == len(e) == Q
        torch.testing.assert_close(g.pred_boxes.tensor, e.pred_boxes.tensor)
        torch.testing.assert_close(g.scores, e.scores)
        assert torch.equal(g.pred_classes, e.pred_classes)


def test_positions_given_with_the_queries_are_refused():
    model = tiny_detector().eval()
    with torch.no_grad():
        enc = model.encode(model.preprocess_image(BATCH))
    fixed = fixed_queries()
    fixed.query_pos = torch.zeros_like(fixed.content)
    with pytest.raises(ValueError, match="query_pos"):  # the decoder refuses them (it embeds each xyzr)
        model.decode_fixed(enc, fixed)
    with pytest.raises(ValueError, match="image_wh"):
        model.fixed_group(fixed_queries())
    with pytest.raises(ValueError, match=r"bool \(11, 11\)"):
        model.decode(enc, [model.fixed_group(fixed_queries(), enc), model.matching_queries(enc)[0]],
                     torch.zeros(11, 11))
