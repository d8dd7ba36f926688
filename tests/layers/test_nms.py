"""Class-wise NMS / Soft-NMS against a direct loop implementation and a hand-computed case."""
import math

import pytest
import torch
from torchvision.ops import nms as tv_nms

from codetr.layers import nms as nms_module
from codetr.layers.nms import batched_nms, batched_soft_nms, soft_nms


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def loop_soft_nms(boxes, scores, labels, iou_threshold, sigma, min_score, method):
    """Textbook Soft-NMS, one class at a time, on Python floats."""
    result = []
    for c in sorted(set(labels)):
        cand = {i: scores[i] for i in range(len(boxes)) if labels[i] == c and scores[i] >= min_score}
        while cand:
            best = max(cand, key=lambda i: (cand[i], -i))  # highest score, lowest index on ties
            result.append((best, cand.pop(best)))
            for i in list(cand):
                o = _iou(boxes[best], boxes[i])
                if method == "linear":
                    w = 1.0 - o if o >= iou_threshold else 1.0
                else:
                    w = math.exp(-o * o / sigma)
                cand[i] *= w
                if cand[i] < min_score:
                    del cand[i]
    result.sort(key=lambda t: -t[1])
    return [i for i, _ in result], [s for _, s in result]


def _random_case(gen, n, num_classes, dtype=torch.float64):
    xy = torch.rand(n, 2, generator=gen, dtype=dtype) * 50
    wh = torch.rand(n, 2, generator=gen, dtype=dtype) * 30 + 1
    # clusters of near-duplicates so that decays actually happen
    base = torch.randint(0, max(1, n // 3), (n,), generator=gen)
    xy = xy[base] + torch.randn(n, 2, generator=gen, dtype=dtype) * 2
    boxes = torch.cat([xy, xy + wh[base]], dim=1)
    scores = torch.rand(n, generator=gen, dtype=dtype)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    return boxes, scores, labels


@pytest.mark.parametrize("precompute", [True, False])
@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("seed", range(6))
def test_soft_nms_matches_loop(method, seed, precompute, monkeypatch):
    if not precompute:  # the path for many boxes: IoU computed row by row
        monkeypatch.setattr(nms_module, "_PRECOMPUTE_LIMIT", 0)
    gen = torch.Generator().manual_seed(seed)
    n = [1, 5, 17, 40, 64, 120][seed]
    boxes, scores, labels = _random_case(gen, n, num_classes=1 + seed % 4)
    thr, sigma, min_score = (0.8, 0.5, 1e-3) if seed % 2 == 0 else (0.3, 0.2, 0.05)
    keep, new_scores = batched_soft_nms(boxes, scores, labels, thr, sigma, min_score, method)
    ref_keep, ref_scores = loop_soft_nms(boxes.tolist(), scores.tolist(), labels.tolist(), thr, sigma, min_score, method)
    assert keep.tolist() == ref_keep
    assert torch.allclose(new_scores, torch.tensor(ref_scores, dtype=torch.float64), atol=1e-12)
    assert keep.dtype == torch.int64 and new_scores.dtype == torch.float64
    assert (new_scores[:-1] >= new_scores[1:]).all()


def test_soft_nms_float32_close_to_loop():
    gen = torch.Generator().manual_seed(11)
    boxes, scores, labels = _random_case(gen, 80, 3, dtype=torch.float32)
    keep, new_scores = batched_soft_nms(boxes, scores, labels, 0.5, 0.5, 1e-3, "gaussian")
    ref_keep, ref_scores = loop_soft_nms(boxes.tolist(), scores.tolist(), labels.tolist(), 0.5, 0.5, 1e-3, "gaussian")
    assert sorted(keep.tolist()) == sorted(ref_keep)
    assert torch.allclose(new_scores, torch.tensor(ref_scores, dtype=torch.float32), atol=1e-5)


def test_soft_nms_hand_computed():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # A, class 0, 0.9
            [0.0, 0.0, 10.0, 8.0],  # B, class 0, 0.8: IoU(A, B) = 80 / 100 = 0.8
            [0.0, 0.0, 10.0, 10.0],  # C, class 1, 0.5: same box as A but another class
            [20.0, 20.0, 30.0, 30.0],  # D, class 0, 0.3: no overlap
            [0.0, 0.0, 10.0, 5.0],  # E, class 0, 0.6: IoU(A, E) = 0.5, IoU(B, E) = 50 / 80 = 0.625
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.5, 0.3, 0.6])
    labels = torch.tensor([0, 0, 1, 0, 0])
    # linear, threshold 0.8: A keeps 0.9; B -> 0.8 * (1 - 0.8) = 0.16; E (IoU 0.5 < 0.8) keeps 0.6;
    # then E is selected (0.6): IoU(E, B) = 0.625 < 0.8, B stays 0.16; C and D untouched.
    keep, s = batched_soft_nms(boxes, scores, labels, iou_threshold=0.8, min_score=1e-3, method="linear")
    assert keep.tolist() == [0, 4, 2, 3, 1]
    assert torch.allclose(s, torch.tensor([0.9, 0.6, 0.5, 0.3, 0.16]), atol=1e-6)
    # with min_score 0.2, B (0.16) is discarded
    keep, s = batched_soft_nms(boxes, scores, labels, iou_threshold=0.8, min_score=0.2, method="linear")
    assert keep.tolist() == [0, 4, 2, 3]
    # gaussian, sigma 0.5: after A: B -> 0.8 e^{-0.64/0.5}, E -> 0.6 e^{-0.25/0.5}, D unchanged
    keep, s = batched_soft_nms(boxes, scores, labels, sigma=0.5, min_score=1e-3, method="gaussian")
    b1, e1 = 0.8 * math.exp(-1.28), 0.6 * math.exp(-0.5)  # 0.2224, 0.3639 -> E selected next
    b2 = b1 * math.exp(-(0.625**2) / 0.5)  # then E decays B
    assert keep.tolist() == [0, 2, 4, 3, 1]
    assert torch.allclose(s, torch.tensor([0.9, 0.5, e1, 0.3, b2]), atol=1e-6)


def test_single_class_wrapper_and_empty():
    gen = torch.Generator().manual_seed(3)
    boxes, scores, _ = _random_case(gen, 30, 1)
    k1, s1 = soft_nms(boxes, scores, 0.5, method="linear")
    k2, s2 = batched_soft_nms(boxes, scores, torch.zeros(30, dtype=torch.int64), 0.5, method="linear")
    assert k1.tolist() == k2.tolist() and torch.equal(s1, s2)
    keep, s = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert keep.shape == (0,) and s.shape == (0,) and keep.dtype == torch.int64


def test_degenerate_boxes_do_not_produce_nan():
    boxes = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    keep, s = batched_soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]), method="gaussian")
    assert keep.tolist() == [0, 1, 2] and torch.isfinite(s).all()


def test_input_errors():
    boxes, scores, labels = torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        batched_soft_nms(torch.zeros(3, 5), scores, labels)
    with pytest.raises(ValueError, match="scores"):
        batched_soft_nms(boxes, torch.zeros(2), labels)
    with pytest.raises(TypeError, match="integer"):
        batched_soft_nms(boxes, scores, labels.float())
    with pytest.raises(ValueError, match="method"):
        batched_soft_nms(boxes, scores, labels, method="hard")
    with pytest.raises(ValueError, match="sigma"):
        batched_soft_nms(boxes, scores, labels, sigma=0.0, method="gaussian")


def test_batched_nms_is_classwise():
    gen = torch.Generator().manual_seed(5)
    boxes, scores, labels = _random_case(gen, 60, 3, dtype=torch.float32)
    keep = batched_nms(boxes, scores, labels, 0.5)
    expected = []
    for c in range(3):
        idx = torch.nonzero(labels == c).flatten()
        expected += idx[tv_nms(boxes[idx], scores[idx], 0.5)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert (scores[keep][:-1] >= scores[keep][1:]).all()


def test_batched_nms_keeps_classes_apart_with_negative_boxes():
    """Unclipped boxes (TOOD, DEQDet) may reach below 0. torchvision's coordinate trick offsets
    class c by c * (max + 1) = 101 here, which moves class 1's box (-11, -11, -1, -1) exactly onto
    class 0's (90, 90, 100, 100); class-wise NMS must keep both (and still suppress within a
    class)."""
    boxes = torch.tensor([[90.0, 90.0, 100.0, 100.0], [-11.0, -11.0, -1.0, -1.0], [-10.0, -11.0, -1.0, -1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 1, 1])
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1]
