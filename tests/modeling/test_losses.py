import math

import pytest
import torch

from codetr.modeling.losses import giou_loss, l1_loss, normalized_sum, quality_focal_loss, sigmoid_focal_loss
from codetr.modeling.losses import reduce_num_boxes

LN2 = math.log(2.0)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def focal_by_hand(x, t, alpha=0.25, gamma=2.0):
    p = sigmoid(x)
    if t == 1:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def qfl_by_hand(logits, label, score, beta=2.0):
    """mmdet's QualityFocalLoss written per entry: negatives BCE(x, 0) * sigmoid(x)^beta, the
    positive entry BCE(x, s) * |s - sigmoid(x)|^beta. label = C means background."""
    out = []
    for c, x in enumerate(logits):
        p = sigmoid(x)
        if c == label:
            bce = -(score * math.log(p) + (1 - score) * math.log(1 - p))
            out.append(bce * abs(score - p) ** beta)
        else:
            out.append(-math.log(1 - p) * p**beta)
    return out


def test_focal_hand_computed_numbers():
    # x = 0: p = 0.5, CE = ln 2, modulating factor 0.25
    loss = sigmoid_focal_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(loss, torch.tensor([[0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2]]))


def test_focal_matches_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g) * 3
    targets = torch.zeros(6, 5)
    targets[torch.arange(4), torch.tensor([0, 3, 1, 4])] = 1.0  # rows 4, 5 background
    loss = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0)
    expected = torch.tensor(
        [[focal_by_hand(float(logits[i, j]), int(targets[i, j])) for j in range(5)] for i in range(6)]
    )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_focal_gamma0_no_alpha_is_bce():
    x = torch.tensor([[-2.0, 0.3, 4.0]])
    t = torch.tensor([[0.0, 1.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-1, gamma=0.0), expected)


def test_qfl_hand_computed_numbers():
    # x = 0, positive with score 0.6: BCE = ln 2, |0.6 - 0.5|^2 = 0.01; negative: ln 2 * 0.5^2
    soft = torch.tensor([[0.6, 0.0]])
    loss = quality_focal_loss(torch.zeros(1, 2), soft, beta=2.0)
    torch.testing.assert_close(loss, torch.tensor([[0.01 * LN2, 0.25 * LN2]]))


def test_qfl_matches_mmdet_formula():
    g = torch.Generator().manual_seed(1)
    num, num_classes = 7, 4
    logits = torch.randn(num, num_classes, generator=g) * 2
    labels = [0, 3, 4, 2, 4, 1, 1]  # 4 = background
    scores = torch.rand(num, generator=g)
    soft = torch.zeros(num, num_classes)
    for i, lab in enumerate(labels):
        if lab < num_classes:
            soft[i, lab] = scores[i]
    loss = quality_focal_loss(logits, soft, beta=2.0)
    expected = torch.tensor([qfl_by_hand(logits[i].tolist(), labels[i], float(scores[i])) for i in range(num)])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_qfl_zero_when_prediction_equals_quality():
    score = 0.7
    x = math.log(score / (1 - score))
    loss = quality_focal_loss(torch.tensor([[x]]), torch.tensor([[score]]))
    assert float(loss) == pytest.approx(0.0, abs=1e-10)


def test_losses_return_fp32_for_low_precision_inputs():
    x = torch.randn(3, 4).bfloat16()
    t = torch.zeros(3, 4).bfloat16()
    assert sigmoid_focal_loss(x, t).dtype == torch.float32
    assert quality_focal_loss(x, t).dtype == torch.float32
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).half()
    assert l1_loss(b, b).dtype == torch.float32
    assert giou_loss(b, b).dtype == torch.float32


def test_box_losses_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    torch.testing.assert_close(l1_loss(a, b), torch.ones(1, 4))
    # IoU 1/7, enclosing 9, union 7: GIoU = 1/7 - 2/9
    torch.testing.assert_close(giou_loss(a, b), torch.tensor([1 - (1 / 7 - 2 / 9)]))
    torch.testing.assert_close(giou_loss(a, a), torch.tensor([0.0]))


def test_normalized_sum():
    loss = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    torch.testing.assert_close(normalized_sum(loss, 4.0), torch.tensor(2.5))
    torch.testing.assert_close(normalized_sum(loss, torch.tensor(5.0)), torch.tensor(2.0))


# ----------------------------------------------------------------------------- num_boxes reduction
def test_reduce_num_boxes_single_process():
    assert reduce_num_boxes(0, torch.device("cpu")).item() == 1.0
    assert reduce_num_boxes(7, torch.device("cpu")).item() == 7.0


def test_reduce_num_boxes_is_averaged_over_workers(monkeypatch):
    """Two simulated workers with 3 and 5 boxes: the all-reduced sum 8 over world size 2 -> 4.
    (A spawned 2-process gloo group would test the same thing at 10x the run time.)"""
    from codetr.modeling import losses as losses_module

    def fake_all_reduce(tensor):
        tensor.add_(5.0)  # the other worker's count

    monkeypatch.setattr(losses_module.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", fake_all_reduce)
    assert reduce_num_boxes(3, torch.device("cpu")).item() == 4.0
    assert reduce_num_boxes(0, torch.device("cpu")).item() == 2.5
