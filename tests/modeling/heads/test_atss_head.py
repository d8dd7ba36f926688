"""ATSS auxiliary head: anchors, the assignment it returns, its losses against an independent
computation (torchvision focal / GIoU losses, hand-written decoding and centerness)."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from detectron2.structures import Boxes, Instances

from codetr.modeling.assigners import atss_assign
from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.dense import dense_detections
from support.heads import pyramid_batch

K, C = 3, 16
NAMES, STRIDES = ["p3", "p4", "p5"], [8, 16, 32]


def make_head(scale=12.0, **kw):
    torch.manual_seed(0)
    head = ATSSHead(K, NAMES, STRIDES, in_channels=C, feat_channels=C, num_groups=4, loss_scale=scale, **kw)
    for p in head.parameters():  # non-trivial predictions
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else None
    return head


def all_anchors(feats):
    """Independent anchors: one square of side 8 * stride centred at (x, y) * stride."""
    out = []
    for n, s in zip(NAMES, STRIDES):
        h, w = feats[n].shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h) * s, torch.arange(w) * s, indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float()
        out.append(torch.cat([c - 4 * s, c + 4 * s], 1))
    return out


def test_anchors_one_square_per_location():
    head = make_head()
    _, feats, _ = pyramid_batch(NAMES, STRIDES, C)
    got = [b.tensor for b in head.anchor_generator([feats[n] for n in NAMES])]
    for g, e in zip(got, all_anchors(feats)):
        torch.testing.assert_close(g, e)


def test_samples_are_the_atss_assignment():
    head = make_head().train()
    images, feats, gts = pyramid_batch(NAMES, STRIDES, C)
    _, samples = head(images, feats, gts)
    levels = all_anchors(feats)
    anchors = torch.cat(levels)
    for b, inst in enumerate(gts):
        res = atss_assign(anchors, [len(a) for a in levels], inst.gt_boxes.tensor, inst.gt_classes, topk=9)
        pos = res.gt_index >= 0
        assert pos.sum() > 0
        torch.testing.assert_close(samples.pos_boxes[b], anchors[pos])
        assert torch.equal(samples.pos_labels[b], inst.gt_classes[res.gt_index[pos]])
        torch.testing.assert_close(samples.pos_targets[b], inst.gt_boxes.tensor[res.gt_index[pos]])
        h, w = inst.image_size
        ctr = (anchors[:, :2] + anchors[:, 2:]) / 2
        neg = ~pos & (ctr[:, 0] < w) & (ctr[:, 1] < h)
        torch.testing.assert_close(samples.neg_boxes[b], anchors[neg])
    assert samples.pos_feats is None


@pytest.mark.parametrize("stacked_convs", [1, 4])
def test_losses_match_independent_computation(stacked_convs):
    head = make_head(scale=12.0, stacked_convs=stacked_convs).train()
    images, feats, gts = pyramid_batch(NAMES, STRIDES, C)
    losses, _ = head(images, feats, gts)
    logits, deltas, ctr = head.predict([feats[n] for n in NAMES])
    levels = all_anchors(feats)
    anchors = torch.cat(levels)
    cls_sum, giou_sum, ctr_bce, ctr_w_sum, num_pos = 0.0, 0.0, 0.0, 0.0, 0
    for b, inst in enumerate(gts):
        res = atss_assign(anchors, [len(a) for a in levels], inst.gt_boxes.tensor, inst.gt_classes, topk=9)
        pos = res.gt_index >= 0
        target = torch.zeros(len(anchors), K)
        target[pos, inst.gt_classes[res.gt_index[pos]]] = 1.0
        cls_sum = cls_sum + torchvision.ops.sigmoid_focal_loss(logits[b], target, 0.25, 2.0, reduction="sum")
        a, gt, d = anchors[pos], inst.gt_boxes.tensor[res.gt_index[pos]], deltas[b][pos]
        wa, ha = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        xa, ya = a[:, 0] + wa / 2, a[:, 1] + ha / 2
        x, y = xa + d[:, 0] * 0.1 * wa, ya + d[:, 1] * 0.1 * ha
        w, h = wa * torch.exp(d[:, 2] * 0.2), ha * torch.exp(d[:, 3] * 0.2)
        pred = torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)
        left, right = xa - gt[:, 0], gt[:, 2] - xa
        top, bottom = ya - gt[:, 1], gt[:, 3] - ya
        cness = torch.sqrt(torch.minimum(left, right) / torch.maximum(left, right)
                           * torch.minimum(top, bottom) / torch.maximum(top, bottom))
        giou = torchvision.ops.generalized_box_iou_loss(pred, gt, reduction="none")
        giou_sum = giou_sum + (giou * cness).sum()
        ctr_bce = ctr_bce + F.binary_cross_entropy_with_logits(ctr[b][pos], cness, reduction="sum")
        ctr_w_sum = ctr_w_sum + cness.sum()
        num_pos += int(pos.sum())
    torch.testing.assert_close(losses["loss_cls"], 12 * cls_sum / num_pos, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["loss_bbox"], 12 * 2 * giou_sum / ctr_w_sum, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["loss_centerness"], 12 * ctr_bce / num_pos, rtol=1e-4, atol=1e-5)


def test_no_ground_truth_and_gradients():
    head = make_head().train()
    images, feats, gts = pyramid_batch(NAMES, STRIDES, C)
    gts = [Instances(g.image_size, gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64))
           for g in gts]
    feats = {k: v.requires_grad_() for k, v in feats.items()}
    losses, samples = head(images, feats, gts)
    assert float(losses["loss_bbox"]) == 0 and float(losses["loss_centerness"]) == 0
    assert all(len(p) == 0 for p in samples.pos_boxes) and all(len(n) > 0 for n in samples.neg_boxes)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert feats["p3"].grad.abs().sum() > 0


def test_features_follow_their_anchors():
    head = make_head(return_features=True).train()
    images, feats, gts = pyramid_batch(NAMES, STRIDES, C)
    _, samples = head(images, feats, gts)
    flat = torch.cat([feats[n][0].flatten(1).t() for n in NAMES])  # (A, C) of image 0
    anchors = torch.cat(all_anchors(feats))
    idx = [int(((anchors - a).abs().sum(1) == 0).nonzero()[0]) for a in samples.pos_boxes[0]]
    torch.testing.assert_close(samples.pos_feats[0], flat[idx])


def test_inference_returns_detections_inside_the_image():
    head = make_head().eval()
    images, feats, _ = pyramid_batch(NAMES, STRIDES, C)
    with torch.no_grad():
        results = head(images, feats)
    for r, (h, w) in zip(results, images.image_sizes):
        assert 0 < len(r) <= 100 and r.image_size == (h, w)
        b = r.pred_boxes.tensor
        assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all()
        assert (r.scores[:-1] >= r.scores[1:]).all() and r.pred_classes.max() < K


@pytest.mark.parametrize("stacked_convs", [1, 4])
def test_towers_are_stacked_conv_gn_relu_blocks(stacked_convs):
    """``predict`` written out with the head's weights: per tower ``stacked_convs`` x (3x3 conv
    without bias, GroupNorm, ReLU), then the classification / box / centerness convs; the scale
    multiplies the deltas only. Block i keeps keys ``3 i`` (conv) and ``3 i + 1`` (GN), so one
    block has the Co-DETR layout ``{cls,reg}_convs.{0,1}``."""
    head = make_head(stacked_convs=stacked_convs)
    with torch.no_grad():
        for s in head.scales:
            s.scale.fill_(1.7)
    _, feats, _ = pyramid_batch(NAMES, STRIDES, C)
    keys = [k for k in head.state_dict() if k.startswith("cls_convs.")]
    assert keys == [f"cls_convs.{3 * i + j}.{p}" for i in range(stacked_convs) for j, p in
                    ((0, "weight"), (1, "weight"), (1, "bias"))]

    def tower(x, convs):
        for i in range(stacked_convs):
            conv, gn = convs[3 * i], convs[3 * i + 1]
            x = F.relu(F.group_norm(F.conv2d(x, conv.weight, padding=1), 4, gn.weight, gn.bias))
        return x

    logits, deltas, ctr = head.predict([feats[n] for n in NAMES])
    exp_l, exp_d, exp_c = [], [], []
    for n in NAMES:
        c, r = tower(feats[n], head.cls_convs), tower(feats[n], head.reg_convs)
        exp_l.append(F.conv2d(c, head.atss_cls.weight, head.atss_cls.bias, padding=1).flatten(2).transpose(1, 2))
        exp_d.append(1.7 * F.conv2d(r, head.atss_reg.weight, head.atss_reg.bias, padding=1).flatten(2).transpose(1, 2))
        exp_c.append(F.conv2d(r, head.atss_centerness.weight, head.atss_centerness.bias, padding=1).flatten(1))
    torch.testing.assert_close(logits, torch.cat(exp_l, 1))
    torch.testing.assert_close(deltas, torch.cat(exp_d, 1))
    torch.testing.assert_close(ctr, torch.cat(exp_c, 1))


def test_score_factor_multiplies_after_the_selection():
    """mmdet's order (``filter_scores_and_topk`` on the class scores, then ``scores *
    score_factors``, then NMS): a pair above the threshold by its class score is kept even when
    its product is below it, and the top-k picks by class score."""
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    scores = torch.tensor([[0.06, 0.0], [0.5, 0.0], [0.3, 0.0]])  # 3 anchors, 2 classes
    factor = torch.tensor([0.5, 0.1, 0.9])
    level = (scores, lambda i: boxes[i], factor)
    r = dense_detections((64, 64), [level], 0.05, 1000, 0.6, 100)
    assert r.scores.tolist() == pytest.approx([0.27, 0.05, 0.03])  # 0.06 * 0.5 < 0.05 is kept
    assert torch.equal(r.pred_boxes.tensor, boxes[[2, 1, 0]])
    top1 = dense_detections((64, 64), [level], 0.05, 1, 0.6, 100)  # the best class score: anchor 1
    assert top1.scores.tolist() == pytest.approx([0.05]) and torch.equal(top1.pred_boxes.tensor, boxes[[1]])
    plain = dense_detections((64, 64), [(scores, lambda i: boxes[i])], 0.05, 1000, 0.6, 100)
    assert plain.scores.tolist() == pytest.approx([0.5, 0.3, 0.06])  # no factor: the scores as given


def test_inference_scores_are_class_times_centerness_in_mmdet_order():
    head = make_head(test_score_thresh=0.05).eval()
    images, feats, _ = pyramid_batch(NAMES, STRIDES, C)
    maps = [feats[n] for n in NAMES]
    with torch.no_grad():
        results = head(images, feats)
        logits, deltas, ctr = head.predict(maps)
    anchors = torch.cat(all_anchors(feats))
    for b, (r, (h, w)) in enumerate(zip(results, images.image_sizes)):
        assert len(r) > 0
        cls, cen = logits[b].sigmoid(), ctr[b].sigmoid()
        # every detection: an (anchor, class) pair with class score > 0.05, scored cls * ctr
        for box, score, label in zip(r.pred_boxes.tensor, r.scores, r.pred_classes):
            cand = (cls[:, label] > 0.05) & ((cls[:, label] * cen - score).abs() < 1e-6)
            assert cand.any()
            d = deltas[b][cand][0]
            a = anchors[cand][0]
            wa, ha = a[2] - a[0], a[3] - a[1]
            x, y = a[0] + wa / 2 + d[0] * 0.1 * wa, a[1] + ha / 2 + d[1] * 0.1 * ha
            bw, bh = wa * torch.exp(d[2] * 0.2), ha * torch.exp(d[3] * 0.2)
            exp = torch.stack([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2]).clamp(min=0)
            exp = torch.minimum(exp, torch.tensor([w, h, w, h], dtype=exp.dtype))
            torch.testing.assert_close(box, exp, atol=1e-4, rtol=1e-5)
