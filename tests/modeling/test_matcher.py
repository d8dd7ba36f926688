import math

import pytest
import torch

from codetr.modeling.matcher import HungarianMatcher
from support.matching import brute_force_assignment


def independent_cost(logits, boxes, labels, tgt_boxes, w_class=2.0, w_bbox=5.0, w_giou=2.0, alpha=0.25, gamma=2.0):
    """Cost written out with Python floats, one (query, target) pair at a time."""
    def xyxy(b):
        cx, cy, w, h = b
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def giou(a, b):
        a, b = xyxy(a), xyxy(b)
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        enclosing = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
        return inter / union - (enclosing - union) / enclosing

    num_q, num_g = logits.shape[0], labels.shape[0]
    cost = [[0.0] * num_g for _ in range(num_q)]
    for q in range(num_q):
        for g in range(num_g):
            p = 1 / (1 + math.exp(-float(logits[q, labels[g]])))
            focal = alpha * (1 - p) ** gamma * (-math.log(p)) - (1 - alpha) * p**gamma * (-math.log(1 - p))
            l1 = sum(abs(float(boxes[q, k]) - float(tgt_boxes[g, k])) for k in range(4))
            cost[q][g] = w_class * focal + w_bbox * l1 - w_giou * giou(boxes[q].tolist(), tgt_boxes[g].tolist())
    return cost


def random_case(num_q, num_g, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_q, num_classes, generator=g) * 2
    boxes = torch.cat([torch.rand(num_q, 2, generator=g) * 0.6 + 0.2, torch.rand(num_q, 2, generator=g) * 0.3 + 0.05], 1)
    labels = torch.randint(0, num_classes, (num_g,), generator=g)
    tgt_boxes = torch.cat([torch.rand(num_g, 2, generator=g) * 0.6 + 0.2, torch.rand(num_g, 2, generator=g) * 0.3 + 0.05], 1)
    return logits, boxes, labels, tgt_boxes


def test_cost_matrix_matches_independent_formula():
    logits, boxes, labels, tgt_boxes = random_case(5, 3, seed=3)
    cost = HungarianMatcher().cost_matrix(logits, boxes, labels, tgt_boxes)
    expected = torch.tensor(independent_cost(logits, boxes, labels, tgt_boxes))
    torch.testing.assert_close(cost, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_q,num_g,seed", [(3, 3, 0), (4, 2, 1), (5, 3, 2), (6, 4, 3), (5, 5, 4), (6, 1, 5)])
def test_assignment_is_optimal_against_brute_force(num_q, num_g, seed):
    logits, boxes, labels, tgt_boxes = random_case(num_q, num_g, seed=seed)
    cost = independent_cost(logits, boxes, labels, tgt_boxes)
    _, best = brute_force_assignment(cost, num_q, num_g)
    (rows, cols), = HungarianMatcher()(logits[None], boxes[None], [{"labels": labels, "boxes": tgt_boxes}])
    assert rows.dtype == cols.dtype == torch.int64
    assert len(rows) == num_g and sorted(cols.tolist()) == list(range(num_g))  # every target matched once
    assert len(set(rows.tolist())) == num_g  # one target per query
    assert rows.tolist() == sorted(rows.tolist())
    total = sum(cost[q][g] for q, g in zip(rows.tolist(), cols.tolist()))
    assert total == pytest.approx(best, rel=1e-5, abs=1e-5)


def test_recovers_obvious_permutation():
    tgt_boxes = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2], [0.5, 0.2, 0.3, 0.1]])
    labels = torch.tensor([0, 2, 1])
    order = [2, 0, 1]  # query q predicts target order[q]
    boxes = tgt_boxes[order]
    logits = torch.full((3, 3), -5.0)
    logits[torch.arange(3), labels[order]] = 5.0
    (rows, cols), = HungarianMatcher()(logits[None], boxes[None], [{"labels": labels, "boxes": tgt_boxes}])
    assert rows.tolist() == [0, 1, 2]
    assert cols.tolist() == order


def test_batch_with_zero_target_image():
    logits, boxes, labels, tgt_boxes = random_case(4, 2, seed=7)
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
        {"labels": labels, "boxes": tgt_boxes},
    ]
    out = HungarianMatcher()(torch.stack([logits, logits]), torch.stack([boxes, boxes]), targets)
    assert out[0][0].numel() == 0 and out[0][1].numel() == 0
    assert out[0][0].dtype == torch.int64
    assert len(out[1][0]) == 2


def test_zero_queries():
    labels = torch.tensor([1])
    tgt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    out = HungarianMatcher()(torch.zeros(1, 0, 3), torch.zeros(1, 0, 4), [{"labels": labels, "boxes": tgt}])
    assert out[0][0].numel() == 0 and out[0][1].numel() == 0


def test_low_precision_inputs_cost_in_fp32():
    logits, boxes, labels, tgt_boxes = random_case(4, 3, seed=9)
    matcher = HungarianMatcher()
    cost = matcher.cost_matrix(logits.bfloat16(), boxes.bfloat16(), labels, tgt_boxes.bfloat16())
    assert cost.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (rows, cols), = matcher(logits[None], boxes[None], [{"labels": labels, "boxes": tgt_boxes}])
    (rows32, cols32), = matcher(logits[None], boxes[None], [{"labels": labels, "boxes": tgt_boxes}])
    assert rows.tolist() == rows32.tolist() and cols.tolist() == cols32.tolist()


def test_all_zero_costs_rejected():
    with pytest.raises(ValueError, match="all costs are 0"):
        HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0)


def test_l1_cost_on_corners():
    """l1_box_format="xyxy" (AdaMixer / DEQDet): the L1 between corners, by hand. A pure shift of
    0.1 in x costs 0.1 in cxcywh and 0.2 in corners (both x1 and x2 move); a width change of 0.2
    costs 0.2 in cxcywh and 0.2 in corners (x1, x2 move by 0.1 each)."""
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    tgt = torch.tensor([[0.6, 0.5, 0.2, 0.2], [0.5, 0.5, 0.4, 0.2]])
    labels = torch.tensor([0, 0])
    logits = torch.zeros(1, 2)
    only_l1 = dict(cost_class=0.0, cost_giou=0.0, cost_bbox=1.0)
    cxcywh = HungarianMatcher(**only_l1).cost_matrix(logits, boxes, labels, tgt)
    xyxy = HungarianMatcher(**only_l1, l1_box_format="xyxy").cost_matrix(logits, boxes, labels, tgt)
    torch.testing.assert_close(cxcywh, torch.tensor([[0.1, 0.2]]))
    torch.testing.assert_close(xyxy, torch.tensor([[0.2, 0.2]]))
    with pytest.raises(ValueError, match="l1_box_format='xywh'"):
        HungarianMatcher(l1_box_format="xywh")


def test_softmax_class_cost_is_detr_s():
    """DETR: ``-softmax(logits)[label]`` over K + 1 logits ("no object" last), cost_class 1."""
    logits, boxes, labels, tgt_boxes = random_case(5, 3, num_classes=5, seed=6)  # 4 classes + "no object"
    labels = labels.clamp(max=3)
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0, class_cost="softmax")
    without_class = torch.tensor(independent_cost(logits, boxes, labels, tgt_boxes, w_class=0.0))
    prob = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in logits.tolist()]
    expected = without_class - torch.tensor([[prob[q][int(g)] for g in labels] for q in range(5)])
    torch.testing.assert_close(matcher.cost_matrix(logits, boxes, labels, tgt_boxes), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="class_cost='sigmoid'"):
        HungarianMatcher(class_cost="sigmoid")


def test_non_finite_cost_is_an_error_naming_the_predictions():
    """A diverged model's NaN / inf predictions: FloatingPointError with the counts, before scipy
    (which failed with "matrix contains invalid numeric entries")."""
    logits, boxes, labels, tgt_boxes = random_case(5, 3, seed=2)
    matcher = HungarianMatcher()
    boxes[1] = float("nan")  # one query's box: a row of 3 NaN costs
    with pytest.raises(FloatingPointError, match=r"\(5 queries x 3 targets\) has 3 non-finite .*predicted logits: "
                       r"0 of 20, predicted boxes: 4 of 20, target boxes: 0 of 12"):
        matcher(logits[None], boxes[None], [{"labels": labels, "boxes": tgt_boxes}])
    logits, boxes, labels, tgt_boxes = random_case(5, 3, seed=2)
    logits[:, labels[0]] = float("inf")  # every query's logit of target 0's class: that column is inf
    with pytest.raises(FloatingPointError, match=r"has [1-9]\d* non-finite .*predicted logits: 5 of 20"):
        matcher(logits[None], boxes[None], [{"labels": labels, "boxes": tgt_boxes}])
