"""ATSS and task-aligned assigners: hand-computed cases and a brute-force statement of each rule."""
import math
import statistics

import pytest
import torch

from codetr.modeling.assigners import atss_assign, normalize_alignment, tal_assign



# ----------------------------------------------------------------------------- brute force
def py_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def center(b):
    return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)


def inside(p, g, eps=0.01):
    return min(p[0] - g[0], p[1] - g[1], g[2] - p[0], g[3] - p[1]) > eps


def resolve(claims, num_anchors):
    """claims: {anchor: [(iou, gt), ...]} -> per anchor the gt with the highest IoU (lowest index on ties)."""
    out = [-1] * num_anchors
    best = [0.0] * num_anchors
    for a, lst in claims.items():
        iou, g = max(lst, key=lambda x: (x[0], -x[1]))
        out[a], best[a] = g, iou
    return out, best


def brute_atss(anchors, per_level, gts, topk):
    anchors, gts = anchors.tolist(), gts.tolist()
    claims = {}
    for g, gt in enumerate(gts):
        gc = center(gt)
        cands, start = [], 0
        for n in per_level:
            level = list(range(start, start + n))
            level.sort(key=lambda a: math.dist(center(anchors[a]), gc))
            cands += level[:topk]
            start += n
        ious = [py_iou(anchors[a], gt) for a in cands]
        thr = statistics.mean(ious) + (statistics.stdev(ious) if len(ious) > 1 else 0.0)
        for a, iou in zip(cands, ious):
            if iou >= thr and inside(center(anchors[a]), gt):
                claims.setdefault(a, []).append((iou, g))
    brute_atss.num_conflicts = sum(len(v) > 1 for v in claims.values())
    return resolve(claims, len(anchors))


def brute_tal(scores, preds, anchors, gts, labels, topk, alpha, beta):
    scores, preds, anchors = scores.tolist(), preds.tolist(), anchors.tolist()
    gts, labels = gts.tolist(), labels.tolist()
    num_a = len(preds)
    metric = [[scores[a][labels[g]] ** alpha * py_iou(preds[a], gts[g]) ** beta for g in range(len(gts))]
              for a in range(num_a)]
    claims = {}
    for g, gt in enumerate(gts):
        order = sorted(range(num_a), key=lambda a: -metric[a][g])[:topk]
        for a in order:
            if metric[a][g] > 0 and inside(center(anchors[a]), gt):
                claims.setdefault(a, []).append((py_iou(preds[a], gt), g))
    gt_index, iou = resolve(claims, num_a)
    brute_tal.num_conflicts = sum(len(v) > 1 for v in claims.values())
    t = [metric[a][gt_index[a]] if gt_index[a] >= 0 else 0.0 for a in range(num_a)]
    t_hat = [0.0] * num_a
    for g in range(len(gts)):
        mine = [a for a in range(num_a) if gt_index[a] == g]
        if mine:
            max_t = max(t[a] for a in mine)
            max_iou = max(iou[a] for a in mine)
            for a in mine:
                t_hat[a] = t[a] / (max_t + 1e-7) * max_iou
    return gt_index, iou, t, t_hat


# ----------------------------------------------------------------------------- random cases
def grid_anchors(sizes, strides, scale, gen):
    """Square anchors of side scale*stride on per-level grids, centres jittered so no distance ties."""
    boxes, per_level = [], []
    for (h, w), s in zip(sizes, strides):
        f64 = torch.float64
        ys, xs = torch.meshgrid(torch.arange(h, dtype=f64), torch.arange(w, dtype=f64), indexing="ij")
        jitter = (torch.rand(h * w, 2, generator=gen, dtype=f64) - 0.5) * 0.1 * s
        ctr = torch.stack([xs.flatten(), ys.flatten()], 1) * s + s / 2 + jitter
        half = scale * s / 2 * (0.7 + 0.6 * torch.rand(h * w, 2, generator=gen, dtype=torch.float64))
        boxes.append(torch.cat([ctr - half, ctr + half], 1))
        per_level.append(h * w)
    return torch.cat(boxes), per_level


def random_gts(n, size, gen):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size * 0.8
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size * 0.5 + 4
    return torch.cat([xy, (xy + wh).clamp(max=size)], 1)


# ----------------------------------------------------------------------------- ATSS
def test_atss_hand_single_level():
    # GT centre (1, 1): distances 0, 1, 4, 10 -> top-3 candidates anchors 0, 1, 2 with IoUs 1, 1/3, 0.
    # mean 4/9, unbiased std sqrt(21)/9 -> threshold 0.9536: only anchor 0 (centre inside) is positive.
    anchors = torch.tensor([[0, 0, 2, 2], [1, 0, 3, 2], [4, 0, 6, 2], [10, 0, 12, 2]], dtype=torch.float32)
    gts = torch.tensor([[0, 0, 2, 2]], dtype=torch.float32)
    res = atss_assign(anchors, [4], gts, torch.tensor([3]), topk=3)
    assert res.gt_index.tolist() == [0, -1, -1, -1]
    assert res.labels.tolist() == [3, -1, -1, -1]
    assert res.max_iou.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_atss_hand_conflict_goes_to_highest_iou():
    # Anchor 0 = [0,0,4,4] (centre (2,2)) has IoU 10/16 with GT 0 and 12/16 with GT 1; the two
    # far anchors have IoU 0. Per GT, candidates [x, 0, 0]: threshold x/3 + x/sqrt(3) < x.
    anchors = torch.tensor([[0, 0, 4, 4], [20, 20, 24, 24], [40, 40, 44, 44]], dtype=torch.float32)
    gts = torch.tensor([[0, 0, 4, 2.5], [0, 0, 4, 3]])
    res = atss_assign(anchors, [3], gts, torch.tensor([5, 7]), topk=3)
    assert res.gt_index.tolist() == [1, -1, -1]
    assert res.labels.tolist() == [7, -1, -1]
    assert res.max_iou[0].item() == pytest.approx(0.75)


def test_atss_hand_centre_outside_is_negative():
    # IoU 7.6/16 is above the threshold but the anchor centre y=2 lies outside the GT (y1 = 1.9).
    anchors = torch.tensor([[0, 0, 4, 4], [20, 20, 24, 24], [40, 40, 44, 44]], dtype=torch.float32)
    res = atss_assign(anchors, [3], torch.tensor([[0, 0, 4, 1.9]]), topk=3)
    assert res.gt_index.tolist() == [-1, -1, -1]


def test_atss_hand_topk_is_per_level():
    # Level 0 holds 3 anchors near the GT, level 1 one anchor. With topk=1 the candidates are the
    # closest anchor of each level: anchor 0 (IoU 1) and anchor 3 (IoU 0.25); anchors 1, 2 are
    # never candidates although their IoUs (0.6) beat anchor 3's.
    anchors = torch.tensor([[0, 0, 4, 4], [1, 0, 5, 4], [0, 1, 4, 5], [-2, -2, 6, 6]], dtype=torch.float32)
    gts = torch.tensor([[0, 0, 4, 4]], dtype=torch.float32)
    res = atss_assign(anchors, [3, 1], gts, topk=1)
    # candidates IoUs 1 and 0.25: mean 0.625, std 0.75/sqrt(2) = 0.530 -> threshold 1.155: none.
    assert res.gt_index.tolist() == [-1, -1, -1, -1]
    res = atss_assign(anchors, [3, 1], gts, topk=3)
    # candidates 0, 1, 2 (IoUs 1, 0.6, 0.6) and 3 (0.25): mean 0.6125, std 0.3066 -> thr 0.919: anchor 0.
    assert res.gt_index.tolist() == [0, -1, -1, -1]


def test_atss_no_gt_and_no_anchor():
    anchors = torch.tensor([[0, 0, 4, 4], [2, 2, 6, 6]], dtype=torch.float32)
    res = atss_assign(anchors, [2], torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert res.gt_index.tolist() == [-1, -1] and res.labels.tolist() == [-1, -1]
    assert res.max_iou.tolist() == [0.0, 0.0]
    res = atss_assign(torch.zeros(0, 4), [0], torch.tensor([[0.0, 0, 4, 4]]))
    assert res.gt_index.shape == (0,)


@pytest.mark.parametrize("seed", range(4))
def test_atss_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    anchors, per_level = grid_anchors([(8, 8), (4, 4), (2, 2)], [8, 16, 32], scale=4, gen=gen)
    gts = random_gts(6, 64, gen)
    gt_index, iou = brute_atss(anchors, per_level, gts, topk=5)
    for max_elements in (1 << 22, 100):  # one chunk, and one GT per chunk
        res = atss_assign(anchors, per_level, gts, topk=5, max_elements=max_elements)
        assert res.gt_index.tolist() == gt_index
        torch.testing.assert_close(res.max_iou, torch.tensor(iou, dtype=torch.float64))
    assert sum(i >= 0 for i in gt_index) >= 8
    assert brute_atss.num_conflicts > 0  # some anchors are claimed by several GTs


# ----------------------------------------------------------------------------- TAL
def test_tal_hand_case():
    # Two anchors (centres (2, 2), (6, 2)), one class, one GT [0, 0, 8, 4].
    anchors = torch.tensor([[0, 0, 4, 4], [4, 0, 8, 4], [20, 20, 24, 24]], dtype=torch.float32)
    preds = torch.tensor([[0, 0, 8, 4], [0, 0, 8, 2], [20, 20, 24, 24]], dtype=torch.float32)
    scores = torch.tensor([[0.5], [0.8], [0.9]])
    gts = torch.tensor([[0, 0, 8, 4]], dtype=torch.float32)
    res = tal_assign(scores, preds, anchors, gts, torch.tensor([0]), topk=13, alpha=1, beta=6)
    # IoUs 1 and 0.5; t = 0.5 * 1 = 0.5 and 0.8 * 0.5^6 = 0.0125; anchor 2: IoU 0 -> t 0.
    assert res.gt_index.tolist() == [0, 0, -1]
    torch.testing.assert_close(res.max_iou, torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(res.metric, torch.tensor([0.5, 0.0125, 0.0]))
    # t_hat = t / max t * max IoU = t / 0.5 * 1
    torch.testing.assert_close(res.norm_metric, torch.tensor([1.0, 0.025, 0.0]), rtol=1e-5, atol=1e-6)
    # topk=1 keeps only the best-aligned anchor.
    res = tal_assign(scores, preds, anchors, gts, torch.tensor([0]), topk=1)
    assert res.gt_index.tolist() == [0, -1, -1]


def test_tal_hand_tie_break_by_iou_and_centre_inside():
    # Anchor 0 (centre (2, 2)) lies in both GTs. Its predicted box [0,0,4,4] has IoU 16/17.6 with
    # GT 0 and t = 0.9 * (1/1.1)^6 = 0.508 there, IoU 1 with GT 1 and t = 0.1 * 1 = 0.1: the
    # larger t is GT 0's, but the anchor goes to GT 1, the higher IoU.
    anchors = torch.tensor([[0, 0, 4, 4], [10, 10, 14, 14]], dtype=torch.float32)
    preds = torch.tensor([[0, 0, 4, 4], [0, 0, 4, 4.4]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    gts = torch.tensor([[0, 0, 4, 4.4], [0, 0, 4, 4]], dtype=torch.float32)
    res = tal_assign(scores, preds, anchors, gts, torch.tensor([0, 1]), topk=2)
    # Anchor 1's prediction has IoU 1 with GT 0 but its centre (12, 12) is outside: negative.
    assert res.gt_index.tolist() == [1, -1]
    assert res.labels.tolist() == [1, -1]
    torch.testing.assert_close(res.max_iou, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(res.metric, torch.tensor([0.1, 0.0]))
    torch.testing.assert_close(res.norm_metric, torch.tensor([0.1 / (0.1 + 1e-7), 0.0]))


def test_tal_no_gt():
    res = tal_assign(torch.rand(3, 2), torch.rand(3, 4) + torch.tensor([0, 0, 1, 1]), torch.rand(3, 4),
                     torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert res.gt_index.tolist() == [-1, -1, -1]
    assert res.norm_metric.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("seed", range(4))
def test_tal_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    anchors, _ = grid_anchors([(8, 8), (4, 4)], [8, 16], scale=8, gen=gen)
    num_a = anchors.shape[0]
    gts = random_gts(7, 64, gen)
    labels = torch.randint(0, 3, (7,), generator=gen)
    scores = torch.rand(num_a, 3, generator=gen, dtype=torch.float64)
    # predicted boxes: jittered copies of the GT nearest to the anchor, so IoUs spread over (0, 1]
    nearest = torch.cdist(anchors[:, :2] + anchors[:, 2:], gts[:, :2] + gts[:, 2:]).argmin(1)
    preds = gts[nearest] + torch.randn(num_a, 4, generator=gen, dtype=torch.float64) * 3
    preds = torch.cat([preds[:, :2], torch.maximum(preds[:, 2:], preds[:, :2] + 1)], 1)
    gt_index, iou, t, t_hat = brute_tal(scores, preds, anchors, gts, labels, topk=13, alpha=1, beta=6)
    for max_elements in (1 << 22, 3 * num_a):  # one chunk, and chunks of 3 GTs
        res = tal_assign(scores, preds, anchors, gts, labels, topk=13, max_elements=max_elements)
        assert res.gt_index.tolist() == gt_index
        torch.testing.assert_close(res.max_iou, torch.tensor(iou, dtype=torch.float64))
        torch.testing.assert_close(res.metric, torch.tensor(t, dtype=torch.float64))
        torch.testing.assert_close(res.norm_metric, torch.tensor(t_hat, dtype=torch.float64))
    assert sum(i >= 0 for i in gt_index) > 20
    assert brute_tal.num_conflicts > 0  # some anchors are claimed by several GTs


def test_normalize_alignment_hand():
    gt_index = torch.tensor([0, 1, 0, -1, 1])
    metric = torch.tensor([0.2, 0.3, 0.4, 0.9, 0.6])
    iou = torch.tensor([0.7, 0.5, 0.6, 0.9, 0.4])
    out = normalize_alignment(gt_index, metric, iou, num_gt=2, eps=0.0)
    # GT 0: max t 0.4, max IoU 0.7; GT 1: max t 0.6, max IoU 0.5
    torch.testing.assert_close(out, torch.tensor([0.2 / 0.4 * 0.7, 0.3 / 0.6 * 0.5, 0.7, 0.0, 0.5]))
