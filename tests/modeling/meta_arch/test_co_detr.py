"""Co-DETR around a tiny DINO (CPU, seconds): pyramid, auxiliary losses and positive queries,
gradients, switches, inference = DINO, eval_module, padding-as-image, stripping aux weights."""
import importlib.util
import math
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.modeling import META_ARCH_REGISTRY

from codetr.layers.box_ops import box_cxcywh_to_xyxy, elementwise_box_iou
from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.meta_arch import CoDETR
from codetr.modeling.queries.positive_queries import PositiveQueries
from support.dino import D, K, tiny_co_detr, tiny_co_dino
from support.models import BATCH, make_input


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_registered():
    assert META_ARCH_REGISTRY.get("CoDETR") is CoDETR


@pytest.mark.parametrize("scales", [5, 4])
def test_pyramid_levels_and_strides(scales):
    model = tiny_co_detr(scales).train()
    inputs = [make_input(64, 96, seed=1), make_input(64, 96, seed=2)]  # no padding
    images = model.detector.preprocess_image(inputs)
    enc = model.detector.encode(images)
    pyramid = model.pyramid(enc)
    first = 7 - scales
    assert list(pyramid) == [f"p{i}" for i in range(first, 8)]
    assert model.pyramid_strides == [2**i for i in range(first, 8)]
    for name, x in pyramid.items():
        s = 2 ** int(name[1:])
        assert x.shape == (2, D, math.ceil(64 / s), math.ceil(96 / s)), name
    # the encoder levels are the memory, reshaped (independent slicing)
    memory, start = enc.memory, 0
    for name, x in list(pyramid.items())[:-1]:
        h, w = x.shape[-2:]
        torch.testing.assert_close(x, memory[:, start:start + h * w].reshape(2, h, w, D).permute(0, 3, 1, 2))
        start += h * w
    assert start == memory.shape[1]
    # the extra level: 3x3 stride-2 conv + GroupNorm on the last encoder level
    conv, gn = model.downsample.conv, model.downsample.norm
    last = list(pyramid.values())[-2]
    expected = F.group_norm(F.conv2d(last, conv.weight, conv.bias, stride=2, padding=1), 8, gn.weight, gn.bias)
    torch.testing.assert_close(list(pyramid.values())[-1], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sizes", [[(96, 128), (64, 160)], [(160, 64), (32, 160)]])
def test_pyramid_of_a_padded_batch_equals_single_image(sizes):
    """Every pyramid level (the encoder levels and the extra stride-128 one) of an image in a
    padded batch equals, on the image's own positions, its pyramid alone; the padded sizes are no
    multiples of 128 (the extra level's mask and GroupNorm statistics must follow the conv)."""
    model = tiny_co_detr(5).eval()
    inputs = [make_input(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    with torch.no_grad():
        batched = model.pyramid(model.detector.encode(model.detector.preprocess_image(inputs)))
        for i, x in enumerate(inputs):
            single = model.pyramid(model.detector.encode(model.detector.preprocess_image([x])))
            for name, s in single.items():
                h, w = s.shape[-2:]
                torch.testing.assert_close(batched[name][i, :, :h, :w], s[0], atol=1e-4, rtol=1e-4, msg=name)


class DropFinestAddPooled(torch.nn.Module):
    """A stub pyramid adapter: the detector's levels without the finest, plus a 2x max-pooled
    coarsest one (records the masks it was given)."""

    def __init__(self, strides):
        super().__init__()
        self.strides = strides[1:] + [strides[-1] * 2]
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, levels, masks):
        self.masks = masks
        return [x * self.scale for x in levels[1:]] + [F.max_pool2d(levels[-1], 2, ceil_mode=True)]


def test_pyramid_adapter_builds_the_auxiliary_pyramid():
    det = tiny_co_dino(4)
    adapter = DropFinestAddPooled([8, 16, 32, 64])
    names, strides = ["p4", "p5", "p6", "p7"], [16, 32, 64, 128]
    head = ATSSHead(K, names, strides, in_channels=D, feat_channels=D, num_groups=8, loss_scale=12.0)
    model = CoDETR(det, [head], PositiveQueries(1, D, K), pyramid_adapter=adapter, pyramid_num_groups=8).train()
    assert model.pyramid_strides == strides and model.downsample is None
    assert not any(k.startswith("downsample.") for k in model.state_dict())
    images = det.preprocess_image(BATCH)
    enc = det.encode(images)
    pyramid = model.pyramid(enc)
    levels = enc.memory_maps()
    assert list(pyramid) == names and len(adapter.masks) == 4 and adapter.masks[0] is enc.masks[0]
    for x, expected in zip(pyramid.values(), levels[1:] + [F.max_pool2d(levels[-1], 2, ceil_mode=True)]):
        torch.testing.assert_close(x, expected)
    losses = model(BATCH)
    assert {"loss_cls_head0", "loss_class_aux0"} <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert adapter.scale.grad is not None and adapter.scale.grad != 0
    # the adapter is training-only: the inference checkpoint drops it
    stripped = _strip_tool().strip(model.state_dict())
    assert set(stripped) == {"detector." + k for k in det.state_dict()}


def _loss_keys(prefix_suffixes):
    return {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in prefix_suffixes}


def test_training_losses_keys():
    model = tiny_co_detr().train()
    losses = model(BATCH)
    dino = _loss_keys(["", "_0", "_enc", "_dn", "_dn_0"])
    aux = _loss_keys(["_aux0", "_aux0_0", "_aux1", "_aux1_0"])
    heads = {"loss_rpn_cls_head0", "loss_rpn_loc_head0", "loss_cls_head0", "loss_box_reg_head0",
             "loss_cls_head1", "loss_bbox_head1", "loss_centerness_head1"}
    assert set(losses) == dino | aux | heads
    assert all(torch.isfinite(v) for v in losses.values())


def _independent_fixed_loss(out, fixed, qfl=True):
    """QFL / L1 / GIoU of fixed-target queries, written out (weights 1, 5, 2)."""
    logits, boxes = out["pred_logits"], out["pred_boxes"]
    valid, pos = fixed.valid, fixed.positive
    lg = logits[valid]
    target = torch.zeros_like(lg)
    lbl = fixed.labels[valid]
    is_pos = lbl < K
    iou = elementwise_box_iou(box_cxcywh_to_xyxy(boxes[valid].detach()), box_cxcywh_to_xyxy(fixed.boxes[valid]))
    target[is_pos, lbl[is_pos]] = iou[is_pos] if qfl else 1.0
    p = lg.sigmoid()
    bce = F.binary_cross_entropy_with_logits(lg, target, reduction="none")
    cls = (bce * (target - p).abs() ** 2).sum()
    n = max(float(pos.sum()), 1.0)
    l1 = (boxes[pos] - fixed.boxes[pos]).abs().sum()
    giou = torchvision.ops.generalized_box_iou_loss(
        box_cxcywh_to_xyxy(boxes[pos]), box_cxcywh_to_xyxy(fixed.boxes[pos]), reduction="sum"
    )
    return {"class": cls / n, "bbox": 5 * l1 / n, "giou": 2 * giou / n}


def test_aux_query_losses_equal_independent_fixed_target_loss():
    model = tiny_co_detr(aux_query_weight=0.5).train()
    calls = []
    decode_fixed = model.detector.decode_fixed

    def spy(enc, fixed):  # a positive-query pass: the fixed group alone
        out = decode_fixed(enc, fixed)
        calls.append((fixed, out))
        assert out["pred_boxes"].shape[1] == fixed.num_queries
        return out

    model.detector.decode_fixed = spy
    losses = model(BATCH)
    assert len(calls) == 2  # one decoder pass per auxiliary head
    for k, (fixed, out) in enumerate(calls):
        assert fixed.num_groups == 1 and fixed.num_queries >= 9 and fixed.positive.any()
        for layer, o in ((f"_aux{k}", out), (f"_aux{k}_0", out["aux_outputs"][0])):
            expected = _independent_fixed_loss(o, fixed)
            for name, value in expected.items():
                torch.testing.assert_close(losses[f"loss_{name}{layer}"], 0.5 * value, rtol=1e-4, atol=1e-6)


def test_positive_queries_are_the_heads_positives():
    model = tiny_co_detr(heads=("atss",)).train()
    got = {}
    atss = model.aux_heads[0]
    atss.register_forward_hook(lambda m, i, o: got.update(samples=o[1]))
    pq_forward = model.positive_queries.forward

    def spy(samples, k, sizes, generator=None):
        fixed = pq_forward(samples, k, sizes, generator)
        got["fixed"], got["sizes"] = fixed, sizes
        return fixed

    model.positive_queries.forward = spy
    model(BATCH)
    samples, fixed = got["samples"], got["fixed"]
    assert got["sizes"] == [(64, 64), (64, 128)]
    for b, (h, w) in enumerate(got["sizes"]):
        n_pos = len(samples.pos_boxes[b])
        assert int(fixed.positive[b].sum()) == min(n_pos, fixed.num_queries)
        # every positive query's target is one of the head's assigned targets, normalised
        t = fixed.boxes[b][fixed.positive[b]]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        xyxy = box_cxcywh_to_xyxy(t) * scale
        d = (xyxy[:, None] - samples.pos_targets[b][None]).abs().amax(-1)
        assert (d.min(1).values < 1e-3).all()


def test_gradients_reach_aux_heads_and_encoder_through_them():
    model = tiny_co_detr().train()
    losses = model(BATCH)
    head_loss = sum(v for k, v in losses.items() if "_head" in k)
    head_loss.backward(retain_graph=True)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert all(n in grads for n, _ in model.aux_heads.named_parameters(prefix="aux_heads"))
    assert any(grads[n].abs().sum() > 0 for n in grads if n.startswith("aux_heads.0."))
    assert any(grads[n].abs().sum() > 0 for n in grads if n.startswith("aux_heads.1."))
    assert grads["downsample.conv.weight"].abs().sum() > 0
    enc = [n for n in grads if n.startswith("detector.transformer.encoder.")]
    assert enc and sum(grads[n].abs().sum() for n in enc) > 0
    assert grads["detector.backbone.res2.weight"].abs().sum() > 0
    assert not any(n.startswith("detector.transformer.decoder.") for n in grads)  # heads skip the decoder
    model.zero_grad()
    sum(v for k, v in losses.items() if "_aux" in k).backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert {"positive_queries.pos_trans.0.weight", "positive_queries.pos_trans.1.weight"} <= names
    assert any(n.startswith("detector.transformer.decoder.layers.") for n in names)


@pytest.mark.parametrize("heads,with_queries", [((), True), (("atss",), True), (("rcnn", "atss"), False)])
def test_switches(heads, with_queries):
    model = tiny_co_detr(heads=heads, with_queries=with_queries).train()
    losses = model(BATCH)
    assert len([k for k in losses if k.startswith("loss_class_aux")]) == (2 * len(heads) if with_queries else 0)
    assert {k[k.rindex("_head") + 5:] for k in losses if "_head" in k} == {str(i) for i in range(len(heads))}
    if not heads:
        assert model.downsample is None
        assert set(losses) == _loss_keys(["", "_0", "_enc", "_dn", "_dn_0"])
    sum(losses.values()).backward()


def test_empty_batch_trains():
    model = tiny_co_detr().train()
    losses = model([make_input(64, 64, seed=8), make_input(64, 96, seed=9)])
    assert all(torch.isfinite(v) for v in losses.values())
    assert set(losses) == set(model(BATCH))
    sum(losses.values()).backward()


def test_inference_runs_no_aux_module_and_equals_dino():
    model = tiny_co_detr().eval()
    dino = tiny_co_dino(seed=1).eval()
    dino.load_state_dict(model.detector.state_dict())

    def fail(*_):
        raise AssertionError("an auxiliary module ran at inference")

    for m in list(model.aux_heads) + [model.positive_queries, model.downsample]:
        m.register_forward_pre_hook(fail)
    inputs = [make_input(64, 64, seed=3, orig=(128, 96)), make_input(64, 128, seed=4)]
    with torch.no_grad():
        got, expected = model(inputs), dino(inputs)
    for g, e in zip(got, expected):
        g, e = g["instances"], e["instances"]
        assert len(g) == len(e) > 0
        torch.testing.assert_close(g.pred_boxes.tensor, e.pred_boxes.tensor)
        torch.testing.assert_close(g.scores, e.scores)
        assert torch.equal(g.pred_classes, e.pred_classes)


@pytest.mark.parametrize("module,index", [("one-stage", 1), ("two-stage", 0)])
def test_eval_module_uses_an_aux_head(module, index):
    model = tiny_co_detr(eval_module=module, eval_heads={"two-stage": 0, "one-stage": 1}).eval()
    ran = []
    model.aux_heads[index].register_forward_hook(lambda *_: ran.append(index))
    model.detector.transformer.decoder.register_forward_pre_hook(lambda *_: ran.append("decoder"))
    inputs = [make_input(64, 64, seed=3, orig=(128, 96))]
    with torch.no_grad():
        out = model(inputs)
    assert ran == [index]
    inst = out[0]["instances"]
    assert inst.image_size == (128, 96) and len(inst) > 0


def test_eval_module_checked():
    with pytest.raises(ValueError, match="eval_module"):
        tiny_co_detr(eval_module="rpn")
    with pytest.raises(ValueError, match="eval_heads"):
        tiny_co_detr(eval_module="one-stage")
    det = tiny_co_dino()
    head = ATSSHead(K, ["p2"], [4], in_channels=D, feat_channels=D, num_groups=8)
    with pytest.raises(ValueError, match="num_heads"):
        CoDETR(det, [head], PositiveQueries(2, D, K), pyramid_num_groups=8)
    with pytest.raises(ValueError, match="num_classes"):
        CoDETR(det, [head], PositiveQueries(1, D, K + 1), pyramid_num_groups=8, num_classes=K)
    with pytest.raises(ValueError, match="num_queries"):
        CoDETR(det, [head], None, pyramid_num_groups=8, num_queries=7)
    CoDETR(det, [head], PositiveQueries(1, D, K), pyramid_num_groups=8, num_classes=K, num_queries=20)


def test_padding_is_image():
    model = tiny_co_detr().train()
    inputs = [make_input(64, 64, [(8, 8, 40, 30)], [0], seed=1), make_input(64, 128, [(70, 10, 120, 50)], [1], seed=2)]
    for x in inputs:
        x["padding_is_image"] = True
    seen = {}
    encode = model.detector.encode

    def spy(images):
        seen["enc"] = encode(images)
        return seen["enc"]

    model.detector.encode = spy
    targets = model.detector.prepare_targets(inputs, [(64, 128), (64, 128)])
    # boxes normalised by the padded 64 x 128 batch, not by the first image's own 64 x 64
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[24 / 128, 19 / 64, 32 / 128, 22 / 64]]))
    losses = model(inputs)
    assert all(torch.isfinite(v) for v in losses.values())
    assert not seen["enc"].memory_mask.any()
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    b = out[0]["instances"].pred_boxes.tensor
    assert out[0]["instances"].image_size == (64, 64) and (b[:, 0::2] <= 64).all()


def _strip_tool():
    path = os.path.join(ROOT, "tools", "strip_aux_weights.py")
    spec = importlib.util.spec_from_file_location("strip_aux_weights", path)
    strip_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strip_tool)
    return strip_tool


def test_strip_aux_weights(tmp_path):
    strip_tool = _strip_tool()
    model = tiny_co_detr()
    src = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "iteration": 7}, src)
    for extra, prefix in (([], "detector."), (["--dino"], "")):
        dst = tmp_path / f"stripped{len(extra)}.pth"
        strip_tool.main([str(src), str(dst), *extra])
        ckpt = torch.load(dst, weights_only=True)
        assert set(ckpt) == {"model"}
        expected = {prefix + k: v for k, v in model.detector.state_dict().items()}
        assert set(ckpt["model"]) == set(expected)
        assert all(torch.equal(ckpt["model"][k], v) for k, v in expected.items())
    dino = tiny_co_dino()
    dino.load_state_dict(torch.load(tmp_path / "stripped1.pth", weights_only=True)["model"])
    co = tiny_co_detr(seed=1)
    missing, unexpected = co.load_state_dict(torch.load(tmp_path / "stripped0.pth", weights_only=True)["model"],
                                             strict=False)
    assert not unexpected and all(not k.startswith("detector.") for k in missing)
