"""Shared conversion pieces against independent computations: ResNet naming (torchvision
forward), the 91 -> 80 COCO class remap (Detectron2's COCO category table), the RPN anchor
order (both anchor orders built explicitly)."""
import itertools
import math

import torch
import torch.nn.functional as F
import torchvision
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_coco_instances_meta
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.proposal_generator.rpn import StandardRPNHead

from codetr.checkpoint import KeyMapper, convert, map_mmdet_rpn_head

from ckpt_source_formats import Dims, dino_official


def _randomise_bn(net):
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5


def test_resnet50_from_torchvision_layout_matches_torchvision_features():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    _randomise_bn(tv)
    result = convert("torchvision-resnet", tv.state_dict())
    assert {d.key for d in result.dropped} == {"fc.weight", "fc.bias"} | {
        k for k in tv.state_dict() if k.endswith("num_batches_tracked")
    }
    d2 = ResNet(
        BasicStem(3, 64, norm="FrozenBN"),
        ResNet.make_default_stages(50, stride_in_1x1=False, norm="FrozenBN"),
        out_features=["res2", "res3", "res4", "res5"],
    ).eval()
    d2.load_state_dict({k[len("backbone."):]: v for k, v in result.state_dict.items()}, strict=True)

    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        ours = d2(x)
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = {}
        for name, layer in zip(["res2", "res3", "res4", "res5"], [tv.layer1, tv.layer2, tv.layer3, tv.layer4]):
            h = layer(h)
            expected[name] = h
    for name in expected:
        torch.testing.assert_close(ours[name], expected[name], atol=1e-4, rtol=1e-4)


def test_coco91_class_head_and_label_embedding_remap_keep_scores_per_class():
    """Converted 80-way heads give, for each contiguous class, the score the 91-way head gives
    the same category (matched by name through Detectron2's COCO category table)."""
    dims = Dims(levels=4, enc_layers=1, dec_layers=2, d=16, ffn=16, heads=2, points=1, queries=5, resnet="resnet18")
    sd = dino_official(dims, values="random", seed=5, shared_heads=False)
    out = convert("dino-official", sd).state_dict
    names = _get_coco_instances_meta()["thing_classes"]
    id_of = {c["name"]: c["id"] for c in COCO_CATEGORIES if c["isthing"]}
    h = torch.randn(7, dims.d)
    pairs = [(f"class_embed.{i}.", f"transformer.decoder.class_embed.{i}.") for i in range(dims.dec_layers)]
    pairs.append(("transformer.enc_out_class_embed.", "transformer.enc_class_embed."))
    for src, dst in pairs:
        src_scores = torch.sigmoid(h @ sd[src + "weight"].T + sd[src + "bias"])  # (7, 91)
        dst_scores = torch.sigmoid(h @ out[dst + "weight"].T + out[dst + "bias"])  # (7, 80)
        assert dst_scores.shape == (7, 80)
        for c, name in enumerate(names):
            torch.testing.assert_close(dst_scores[:, c], src_scores[:, id_of[name]])
    for c, name in enumerate(names):  # the denoising label embedding is indexed by the same labels
        assert torch.equal(out["denoising.label_embedding.weight"][c], sd["label_enc.weight"][id_of[name]])


def _mmdet_cell_anchors(sizes, ratios):
    """mmdet AnchorGenerator.gen_single_level_base_anchors (center offset 0): ratio-major."""
    anchors = []
    for r in ratios:
        for s in sizes:
            h_ratio = math.sqrt(r)
            w, h = s / h_ratio, s * h_ratio
            anchors.append((-w / 2, -h / 2, w / 2, h / 2))
    return torch.tensor(anchors)


def test_rpn_anchor_order_permutation_gives_the_same_prediction_per_anchor():
    sizes, ratios, c, stride = [32.0, 40.3, 50.8], [0.5, 1.0, 2.0], 8, 8
    a = len(sizes) * len(ratios)
    g = torch.Generator().manual_seed(0)
    mm = {
        "rpn_head.rpn_conv.weight": torch.randn(c, c, 3, 3, generator=g) * 0.1,
        "rpn_head.rpn_conv.bias": torch.randn(c, generator=g),
        "rpn_head.rpn_cls.weight": torch.randn(a, c, 1, 1, generator=g),
        "rpn_head.rpn_cls.bias": torch.randn(a, generator=g),
        "rpn_head.rpn_reg.weight": torch.randn(4 * a, c, 1, 1, generator=g),
        "rpn_head.rpn_reg.bias": torch.randn(4 * a, generator=g),
    }
    m = KeyMapper(mm, "test-rpn")
    map_mmdet_rpn_head(m, "rpn_head.", "", len(sizes), len(ratios))
    converted, dropped = m.finish()
    assert dropped == []

    feat = torch.randn(1, c, 5, 6, generator=g)
    # mmdet: head evaluated with its own weights, anchors in its own (ratio-major) order
    t = F.relu(F.conv2d(feat, mm["rpn_head.rpn_conv.weight"], mm["rpn_head.rpn_conv.bias"], padding=1))
    mm_cls = F.conv2d(t, mm["rpn_head.rpn_cls.weight"], mm["rpn_head.rpn_cls.bias"])[0]  # (A, H, W)
    mm_reg = F.conv2d(t, mm["rpn_head.rpn_reg.weight"], mm["rpn_head.rpn_reg.bias"])[0]  # (4A, H, W)
    mm_anchors = _mmdet_cell_anchors(sizes, ratios)
    expected = {}
    for i, (y, x) in itertools.product(range(a), itertools.product(range(5), range(6))):
        box = mm_anchors[i] + torch.tensor([x, y, x, y]) * stride
        expected[tuple(round(v, 2) for v in box.tolist())] = (mm_cls[i, y, x], mm_reg[4 * i : 4 * i + 4, y, x])

    # Detectron2: StandardRPNHead with the converted weights, DefaultAnchorGenerator's anchors
    head = StandardRPNHead(in_channels=c, num_anchors=a, box_dim=4)
    head.load_state_dict(converted, strict=True)
    gen = DefaultAnchorGenerator(sizes=[sizes], aspect_ratios=[ratios], strides=[stride], offset=0.0)
    with torch.no_grad():
        logits, deltas = head([feat])
    anchors = gen([feat])[0].tensor  # (H * W * A, 4), order (y, x, a)
    logits = logits[0][0].permute(1, 2, 0).reshape(-1)  # (H, W, A)
    deltas = deltas[0][0].view(a, 4, 5, 6).permute(2, 3, 0, 1).reshape(-1, 4)
    assert anchors.shape[0] == len(expected)
    for box, logit, delta in zip(anchors, logits, deltas):
        key = tuple(round(v, 2) for v in box.tolist())
        exp_logit, exp_delta = expected.pop(key)
        torch.testing.assert_close(logit, exp_logit, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(delta, exp_delta, atol=1e-5, rtol=1e-5)
    assert not expected

    # the proposals themselves: top-20 decoded boxes of each layout, ranked by objectness
    transform = Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
    mm_boxes = torch.cat([mm_anchors + torch.tensor([x, y, x, y]) * stride
                          for y, x in itertools.product(range(5), range(6))])  # (y, x, a) order
    mm_scores = mm_cls.permute(1, 2, 0).reshape(-1)
    mm_deltas = mm_reg.view(a, 4, 5, 6).permute(2, 3, 0, 1).reshape(-1, 4)
    top_mm = mm_scores.topk(20).indices
    top_d2 = logits.topk(20).indices
    torch.testing.assert_close(logits[top_d2], mm_scores[top_mm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        transform.apply_deltas(deltas[top_d2], anchors[top_d2]),
        transform.apply_deltas(mm_deltas[top_mm], mm_boxes[top_mm].float()),
        atol=1e-3, rtol=1e-5,
    )
