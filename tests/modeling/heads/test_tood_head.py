"""T-Head pieces against explicit computations: bilinear offset sampling, the aligned score and
its losses, the task decomposition, anchors and box decoding, and the head's loss formulas."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, ImageList, Instances

from codetr.modeling.assigners import atss_assign, tal_assign
from codetr.modeling.heads.base import AssignedSamples
from codetr.modeling.heads.tood_head import (
    TaskDecomposition,
    TOODHead,
    aligned_score_logits,
    deform_sampling,
)
from codetr.modeling.losses import quality_focal_loss, sigmoid_focal_loss



def explicit_bilinear(img, y, x):
    """img (H, W); value at the real location (y, x); neighbours outside the map count as 0."""
    h, w = img.shape
    y0, x0 = math.floor(y), math.floor(x)
    out = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * float(img[yy, xx])
    return out


def test_deform_sampling_equals_explicit_bilinear_lookup():
    g = torch.Generator().manual_seed(0)
    n, c, h, w = 2, 4, 5, 6
    feat = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    offset = torch.randn(n, 2 * c, h, w, generator=g, dtype=torch.float64) * 1.5  # some fall outside
    out = deform_sampling(feat, offset)
    expected = torch.zeros_like(out)
    for b in range(n):
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    dy, dx = float(offset[b, 2 * ch, y, x]), float(offset[b, 2 * ch + 1, y, x])
                    expected[b, ch, y, x] = explicit_bilinear(feat[b, ch], y + dy, x + dx)
    torch.testing.assert_close(out, expected)
    # zero offsets: the identity
    torch.testing.assert_close(deform_sampling(feat, torch.zeros_like(offset)), feat)


def test_deform_sampling_nan_offsets_sample_at_offset_zero():
    """A diverged model's NaN offsets: sampled at offset 0 (torchvision's deform_conv2d read out of
    bounds there: a segmentation fault on the CPU); finite offsets unchanged."""
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64)
    offset = torch.randn(1, 4, 4, 5, generator=g, dtype=torch.float64)
    nan_offset = offset.clone()
    nan_offset[0, 0:2, 1, 2] = float("nan")  # channel 0 at (1, 2): both coordinates
    nan_offset[0, 3, 3, 4] = float("nan")  # channel 1 at (3, 4): dx only
    out = deform_sampling(feat, nan_offset)
    expected = deform_sampling(feat, offset)
    expected[0, 0, 1, 2] = feat[0, 0, 1, 2]
    expected[0, 1, 3, 4] = explicit_bilinear(feat[0, 1], 3 + float(offset[0, 2, 3, 4]), 4.0)
    torch.testing.assert_close(out, expected)


def test_aligned_score_logits():
    a = torch.tensor([-30.0, -3.0, 0.0, 0.7, 5.0, 30.0], dtype=torch.float64)[:, None].expand(6, 6)
    b = a.t()
    s = torch.sqrt(torch.sigmoid(a) * torch.sigmoid(b))
    x = aligned_score_logits(a, b)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(torch.sigmoid(x.double()), s, rtol=1e-5, atol=1e-7)


def test_losses_on_aligned_logits_are_the_probability_losses():
    # mmdet's TOOD losses take probabilities: QFL = BCE(s, t) |t - s|^2; focal (activated) =
    # alpha_t (1 - p_t)^2 BCE(s, y). Written here directly on s.
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(20, 3, generator=g) * 3, torch.randn(20, 1, generator=g) * 3
    s = torch.sqrt(torch.sigmoid(a.double()) * torch.sigmoid(b.double()))
    t = torch.rand(20, 3, generator=g, dtype=torch.float64) * (torch.rand(20, 3, generator=g) < 0.3)
    bce = -(t * s.log() + (1 - t) * (1 - s).log())
    torch.testing.assert_close(quality_focal_loss(aligned_score_logits(a, b), t).double(), bce * (t - s).abs() ** 2,
                               rtol=1e-4, atol=1e-6)
    y = (t > 0).double()
    bce_y = -(y * s.log() + (1 - y) * (1 - s).log())
    focal = (0.25 * y + 0.75 * (1 - y)) * ((1 - s) * y + s * (1 - y)) ** 2 * bce_y
    torch.testing.assert_close(sigmoid_focal_loss(aligned_score_logits(a, b), y).double(), focal, rtol=1e-4, atol=1e-6)


def test_task_decomposition_is_a_layer_weighted_reduction_conv():
    torch.manual_seed(0)
    td = TaskDecomposition(feat_channels=8, stacked_convs=3, la_down_rate=6, num_groups=2).double()
    assert td.layer_attention[0].out_channels == 8 * 3 // 6
    for p in td.parameters():  # non-trivial weights
        torch.nn.init.normal_(p, std=0.5)
    feat = torch.randn(2, 24, 4, 5, dtype=torch.float64)
    avg = feat.mean((2, 3), keepdim=True)
    out = td(feat, avg)
    # explicit: w = sigmoid(conv(relu(conv(avg)))); scale group i of feat by w_i; 1x1 conv; GN; ReLU
    la = td.layer_attention
    hidden = F.relu(torch.einsum("oc,nc->no", la[0].weight[:, :, 0, 0], avg[:, :, 0, 0]) + la[0].bias)
    w = torch.sigmoid(torch.einsum("oc,nc->no", la[2].weight[:, :, 0, 0], hidden) + la[2].bias)  # (N, 3)
    scaled = feat.reshape(2, 3, 8, 4, 5) * w[:, :, None, None, None]
    red = F.conv2d(scaled.reshape(2, 24, 4, 5), td.reduction_conv.weight)
    expected = F.relu(F.group_norm(red, 2, td.norm.weight, td.norm.bias, td.norm.eps))
    torch.testing.assert_close(out, expected)


def tiny_head(**kw):
    args = dict(num_classes=3, in_features=["p3", "p4"], strides=[8, 16], in_channels=16, feat_channels=16,
                stacked_convs=2, num_groups=4)
    args.update(kw)
    return TOODHead(**args)


def test_head_structure_and_anchors():
    head = tiny_head(stacked_convs=6, feat_channels=32, in_channels=32, num_groups=8)
    assert len(head.inter_convs) == 6 and isinstance(head.inter_convs[0][1], torch.nn.GroupNorm)
    assert head.cls_decomp.layer_attention[0].in_channels == 6 * 32
    assert head.cls_decomp.layer_attention[0].out_channels == 32 // 8  # la_down_rate = 6 * 8
    assert head.cls_prob_module[0].out_channels == 32 // 4 and head.cls_prob_module[2].out_channels == 1
    assert head.reg_offset_module[2].out_channels == 8
    feats = [torch.zeros(1, 32, 3, 4), torch.zeros(1, 32, 2, 2)]
    anchors = head.anchors(feats)
    # level 0, row 1, column 2: centre (16, 8), side 64
    torch.testing.assert_close(anchors[0][1 * 4 + 2], torch.tensor([16.0 - 32, 8 - 32, 16 + 32, 8 + 32]))
    torch.testing.assert_close(anchors[1][3], torch.tensor([16.0 - 64, 16 - 64, 16 + 64, 16 + 64]))
    logits, boxes = head.predict(feats, anchors)
    assert logits.shape == (1, 12 + 4, 3) and boxes.shape == (1, 16, 4)
    assert logits.dtype == boxes.dtype == torch.float32


def test_head_box_decoding_and_offsets():
    torch.manual_seed(0)
    head = tiny_head()
    d = 1.5
    with torch.no_grad():
        head.tood_reg.weight.zero_()
        head.tood_reg.bias.fill_(math.log(d))  # distances d (stride units) everywhere
        head.scales[1].scale.fill_(2.0)  # level 1: 2 d
        head.reg_offset_module[2].weight.zero_()
        head.reg_offset_module[2].bias.zero_()
    feats = [torch.randn(2, 16, 3, 4), torch.randn(2, 16, 2, 2)]
    anchors = head.anchors(feats)
    _, boxes = head.predict(feats, anchors)
    for lvl, (stride, k, start) in enumerate(((8, d, 0), (16, 2 * d, 12))):
        ctr = (anchors[lvl][:, :2] + anchors[lvl][:, 2:]) / 2
        expected = torch.cat([ctr - k * stride, ctr + k * stride], 1)
        n = anchors[lvl].shape[0]
        torch.testing.assert_close(boxes[0, start:start + n], expected)
    # offset (dy, dx) = (0, 0.5) for x2 only: x2 sampled half-way to the right neighbour, i.e.
    # x2 + stride / 2 inside the map and half the value at the last column (zeros outside).
    with torch.no_grad():
        head.reg_offset_module[2].bias[5] = 0.5
    _, boxes2 = head.predict(feats, anchors)
    x2 = boxes[0, :12, 2].reshape(3, 4)
    expected_x2 = torch.cat([x2[:, :3] + 4.0, x2[:, 3:] / 2], 1)
    torch.testing.assert_close(boxes2[0, :12, 2].reshape(3, 4), expected_x2)
    torch.testing.assert_close(boxes2[0, :12, [0, 1, 3]], boxes[0, :12, [0, 1, 3]])


def test_head_anchor_based_zero_deltas_give_anchors():
    head = tiny_head(anchor_type="anchor_based")
    with torch.no_grad():
        head.tood_reg.weight.zero_()
        head.tood_reg.bias.zero_()
        head.reg_offset_module[2].weight.zero_()
        head.reg_offset_module[2].bias.zero_()
    feats = [torch.randn(1, 16, 3, 4), torch.randn(1, 16, 2, 2)]
    anchors = head.anchors(feats)
    _, boxes = head.predict(feats, anchors)
    torch.testing.assert_close(boxes[0], torch.cat(anchors))


def _instances(h, w, boxes, classes):
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def _fake_predictions(head, feats, seed=0):
    """Anchors, and (N, A, K) logits / (N, A, 4) boxes near the anchors with random jitter."""
    g = torch.Generator().manual_seed(seed)
    anchors = head.anchors(feats)
    a = torch.cat(anchors)
    n = feats[0].shape[0]
    logits = torch.randn(n, a.shape[0], head.num_classes, generator=g) * 2
    ctr = ((a[:, :2] + a[:, 2:]) / 2)[None].expand(n, -1, -1)
    wh = torch.rand(n, a.shape[0], 2, generator=g) * 40 + 8
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], -1)
    return anchors, logits, boxes


@pytest.mark.parametrize("initial", [True, False])
def test_head_losses_match_the_formulas(initial):
    head = tiny_head(initial_epochs=1, epochs=12, max_iter=120, anchor_scale=4)  # 32 / 64 px anchors; TAL from 10
    feats = [torch.zeros(2, 16, 8, 8), torch.zeros(2, 16, 4, 4)]
    anchors, logits, boxes = _fake_predictions(head, feats)
    gts = [_instances(64, 64, [[5, 6, 40, 30], [20, 18, 60, 62]], [0, 2]), _instances(60, 50, [[10, 10, 40, 45]], [1])]
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (60, 50)])
    iteration = 5 if initial else 10
    losses, samples = head.losses_and_samples(images, feats, anchors, gts, (logits, boxes), iteration=iteration)
    assert set(losses) == {"loss_cls", "loss_bbox"}

    a = torch.cat(anchors)
    s = torch.sigmoid(logits.double())  # the head's score is sigmoid of its logits
    cls_sum, box_sum, cls_norm, box_norm = 0.0, 0.0, 0.0, 0.0
    for b, inst in enumerate(gts):
        gt, lab = inst.gt_boxes.tensor, inst.gt_classes
        if initial:
            res = atss_assign(a, [64, 16], gt, lab, topk=9)
            weight = (res.gt_index >= 0).double()
        else:
            res = tal_assign(s[b].float(), boxes[b], a, gt, lab, topk=13, alpha=1, beta=6)
            weight = res.norm_metric.double()
        for i in range(a.shape[0]):
            g = int(res.gt_index[i])
            for c in range(3):
                p = float(s[b, i, c])
                if initial:
                    y = 1.0 if (g >= 0 and c == int(lab[g])) else 0.0
                    pt = p if y else 1 - p
                    cls_sum += (0.25 if y else 0.75) * (1 - pt) ** 2 * -math.log(pt)
                else:
                    t = float(weight[i]) if (g >= 0 and c == int(lab[g])) else 0.0
                    cls_sum += -(t * math.log(p) + (1 - t) * math.log(1 - p)) * abs(t - p) ** 2
            if g >= 0:
                px = boxes[b, i].tolist()
                tx = gt[g].tolist()
                iw = max(0.0, min(px[2], tx[2]) - max(px[0], tx[0]))
                ih = max(0.0, min(px[3], tx[3]) - max(px[1], tx[1]))
                inter = iw * ih
                union = (px[2] - px[0]) * (px[3] - px[1]) + (tx[2] - tx[0]) * (tx[3] - tx[1]) - inter
                enc = (max(px[2], tx[2]) - min(px[0], tx[0])) * (max(px[3], tx[3]) - min(px[1], tx[1]))
                giou = inter / union - (enc - union) / enc
                if initial:
                    cx, cy = (a[i, 0] + a[i, 2]).item() / 2, (a[i, 1] + a[i, 3]).item() / 2
                    l_, r_, t_, b_ = cx - tx[0], tx[2] - cx, cy - tx[1], tx[3] - cy
                    w = math.sqrt(min(l_, r_) / max(l_, r_) * min(t_, b_) / max(t_, b_))
                else:
                    w = float(weight[i])
                box_sum += (1 - giou) * w
                box_norm += w
                cls_norm += float(weight[i])
    assert cls_norm > 0 and box_norm > 0
    assert losses["loss_cls"].item() == pytest.approx(cls_sum / max(cls_norm, 1.0), rel=1e-4)
    assert losses["loss_bbox"].item() == pytest.approx(2.0 * box_sum / max(box_norm, 1.0), rel=1e-4)

    # the samples are the assignment: anchors, labels and matched GT boxes of the positives
    assert isinstance(samples, AssignedSamples) and len(samples.pos_boxes) == 2
    for b, inst in enumerate(gts):
        gt, lab = inst.gt_boxes.tensor, inst.gt_classes
        res = atss_assign(a, [64, 16], gt, lab) if initial else tal_assign(s[b].float(), boxes[b], a, gt, lab)
        pos = res.gt_index >= 0
        torch.testing.assert_close(samples.pos_boxes[b], a[pos])
        assert samples.pos_labels[b].tolist() == lab[res.gt_index[pos]].tolist()
        torch.testing.assert_close(samples.pos_targets[b], gt[res.gt_index[pos]])
        h, w = images.image_sizes[b]
        ctr = (a[:, :2] + a[:, 2:]) / 2
        neg = ~pos & (ctr[:, 0] < w) & (ctr[:, 1] < h)
        torch.testing.assert_close(samples.neg_boxes[b], a[neg])


def test_samples_carry_the_pyramid_feature_at_their_anchor():
    """``return_features``: each sample carries the feature at its anchor's location (the input
    map of its level at row-major (y, x) = anchor centre / stride), as Co-Deformable-DETR needs."""
    torch.manual_seed(0)
    head = tiny_head(return_features=True).train()
    feats = {"p3": torch.randn(2, 16, 8, 8), "p4": torch.randn(2, 16, 4, 4)}
    gts = [_instances(64, 64, [[5, 6, 40, 30], [20, 18, 60, 62]], [0, 2]), _instances(60, 50, [[10, 10, 40, 45]], [1])]
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (60, 50)])
    _, samples = head(images, feats, gts)
    _, plain = tiny_head().train()(images, feats, gts)
    assert plain.pos_feats is None and plain.neg_feats is None

    def feature_at(b, box):
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
        stride = (box[2] - box[0]).item() / 8  # anchor side = 8 * stride
        level = "p3" if stride == 8 else "p4"
        return feats[level][b, :, int(cy // stride), int(cx // stride)]

    for b in range(2):
        assert len(samples.pos_boxes[b]) > 0 and len(samples.pos_feats[b]) == len(samples.pos_boxes[b])
        for boxes, got in ((samples.pos_boxes[b], samples.pos_feats[b]), (samples.neg_boxes[b], samples.neg_feats[b])):
            assert got.shape == (len(boxes), 16)
            torch.testing.assert_close(got, torch.stack([feature_at(b, box) for box in boxes]))


def test_head_losses_without_objects_are_finite_and_keep_the_graph():
    head = tiny_head()
    feats = [torch.randn(1, 16, 4, 4, requires_grad=True), torch.randn(1, 16, 2, 2)]
    images = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)])
    losses, samples = head(images, {"p3": feats[0], "p4": feats[1]}, [_instances(32, 32, [], [])])
    assert losses["loss_bbox"].item() == 0.0 and torch.isfinite(losses["loss_cls"])
    sum(losses.values()).backward()
    assert head.tood_reg.weight.grad is not None and samples.pos_boxes[0].shape == (0, 4)


def test_head_needs_the_schedule_for_initial_epochs():
    head = tiny_head(initial_epochs=2)
    with pytest.raises(ValueError, match="epochs and max_iter"):
        head.use_initial_assigner(0)
    with pytest.raises(ValueError, match="exceeds"):
        tiny_head(initial_epochs=13, epochs=12, max_iter=100)
    with pytest.raises(ValueError, match="anchor_type"):
        tiny_head(anchor_type="free")
