import math

import pytest
import torch

from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.queries.fixed_target import FixedTargetQueries
from support.criterion import GT, expected_losses

C = 3  # classes


# ----------------------------------------------------------------------------- independent reference
# (the losses from their formulas: support/criterion.py)
def assert_losses(actual, expected, suffix=""):
    for name, value in expected.items():
        assert actual[name + suffix].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name + suffix


# ----------------------------------------------------------------------------- hand-made data
# GT (support/criterion.py): image 0 labels 2 and 0, image 1 label 1.
# 3 queries per image; the matching is obvious: image 0: q2 -> gt0, q0 -> gt1; image 1: q1 -> gt0.
LOGITS = [
    [[3.0, -2.0, -1.0], [-3.0, -2.5, -2.0], [-2.0, -1.0, 2.5]],
    [[-2.0, -1.5, -3.0], [-1.0, 2.0, -2.0], [0.5, -2.0, -1.0]],
]
BOXES = [
    [[0.68, 0.62, 0.28, 0.22], [0.1, 0.9, 0.05, 0.05], [0.31, 0.29, 0.22, 0.18]],
    [[0.9, 0.1, 0.1, 0.1], [0.52, 0.47, 0.38, 0.44], [0.2, 0.8, 0.1, 0.1]],
]
MATCHING = {
    (0, 2): (2, GT[0]["boxes"][0].tolist()),
    (0, 0): (0, GT[0]["boxes"][1].tolist()),
    (0, 1): None,
    (1, 1): (1, GT[1]["boxes"][0].tolist()),
    (1, 0): None,
    (1, 2): None,
}


def layer(logits=LOGITS, boxes=BOXES, requires_grad=False):
    out = {"pred_logits": torch.tensor(logits), "pred_boxes": torch.tensor(boxes)}
    if requires_grad:
        for v in out.values():
            v.requires_grad_(True)
    return out


def fixed_queries():
    """One image, two groups of 2 slots: g0 = [positive (label 2, box A), negative],
    g1 = [positive (label 2, box A), padding]."""
    box_a = [0.4, 0.4, 0.2, 0.3]
    return FixedTargetQueries(
        content=torch.zeros(1, 4, 8),
        ref_boxes=torch.full((1, 4, 4), 0.5),
        labels=torch.tensor([[2, C, 2, C]]),
        boxes=torch.tensor([[box_a, [0.0] * 4, box_a, [0.0] * 4]]),
        valid=torch.tensor([[True, True, True, False]]),
        positive=torch.tensor([[True, False, True, False]]),
        num_groups=2,
        group_size=2,
    ), box_a


DN_LOGITS = [[[-1.0, 0.5, 1.5], [0.2, -0.3, 0.1], [-2.0, -1.0, 0.3], [9.0, 9.0, 9.0]]]
DN_BOXES = [[[0.42, 0.38, 0.25, 0.28], [0.5, 0.5, 0.1, 0.1], [0.35, 0.45, 0.15, 0.35], [0.9, 0.9, 0.05, 0.05]]]


# ----------------------------------------------------------------------------- matched losses
@pytest.mark.parametrize("class_loss", ["focal", "qfl"])
def test_matched_losses_equal_independent_computation(class_loss):
    losses = DETRCriterion(C, class_loss=class_loss)(layer(), GT)
    assert set(losses) == {"loss_class", "loss_bbox", "loss_giou"}
    assert_losses(losses, expected_losses(LOGITS, BOXES, MATCHING, normalizer=3, class_loss=class_loss))


def test_l1_loss_on_corners():
    """l1_box_format="xyxy" (AdaMixer / DEQDet): the L1 loss between normalised corners (the
    matching of this case is the same with either L1 cost)."""
    matcher = HungarianMatcher(l1_box_format="xyxy")
    losses = DETRCriterion(C, matcher=matcher, l1_box_format="xyxy")(layer(), GT)
    expected = expected_losses(LOGITS, BOXES, MATCHING, normalizer=3, l1_corners=True)
    assert_losses(losses, expected)
    assert expected["loss_bbox"] != pytest.approx(expected_losses(LOGITS, BOXES, MATCHING, 3)["loss_bbox"], rel=1e-3)
    with pytest.raises(ValueError, match="l1_box_format='cxcy'"):
        DETRCriterion(C, l1_box_format="cxcy")


def test_aux_and_encoder_layers_are_matched_separately():
    # the aux layer's boxes are the final boxes with queries 0 and 2 of image 0 swapped: its own
    # matching must follow the swap
    aux_logits = [[LOGITS[0][2], LOGITS[0][1], LOGITS[0][0]], LOGITS[1]]
    aux_boxes = [[BOXES[0][2], BOXES[0][1], BOXES[0][0]], BOXES[1]]
    aux_matching = dict(MATCHING)
    aux_matching[(0, 0)], aux_matching[(0, 2)] = MATCHING[(0, 2)], MATCHING[(0, 0)]
    outputs = dict(layer(), aux_outputs=[layer(aux_logits, aux_boxes), layer()], enc_outputs=layer(aux_logits, aux_boxes))
    losses = DETRCriterion(C)(outputs, GT)
    names = {f"{n}{s}" for n in ("loss_class", "loss_bbox", "loss_giou") for s in ("", "_0", "_1", "_enc")}
    assert set(losses) == names
    assert_losses(losses, expected_losses(LOGITS, BOXES, MATCHING, 3))
    assert_losses(losses, expected_losses(aux_logits, aux_boxes, aux_matching, 3), "_0")
    assert_losses(losses, expected_losses(LOGITS, BOXES, MATCHING, 3), "_1")
    assert_losses(losses, expected_losses(aux_logits, aux_boxes, aux_matching, 3), "_enc")


def test_loss_weights_are_applied():
    base = DETRCriterion(C)(layer(), GT)
    weighted = DETRCriterion(C, weight_class=2.0, weight_bbox=1.0, weight_giou=0.5)(layer(), GT)
    assert weighted["loss_class"].item() == pytest.approx(2 * base["loss_class"].item())
    assert weighted["loss_bbox"].item() == pytest.approx(base["loss_bbox"].item() / 5)
    assert weighted["loss_giou"].item() == pytest.approx(base["loss_giou"].item() / 4)


def test_image_without_targets_and_batch_without_targets():
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    losses = DETRCriterion(C)(layer(), [GT[0], empty])
    matching = {k: v for k, v in MATCHING.items() if k[0] == 0}
    matching.update({(1, q): None for q in range(3)})
    assert_losses(losses, expected_losses(LOGITS, BOXES, matching, normalizer=2))

    losses = DETRCriterion(C)(layer(), [empty, empty])
    background = {(b, q): None for b in range(2) for q in range(3)}
    assert_losses(losses, expected_losses(LOGITS, BOXES, background, normalizer=1))  # clamped to 1
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0


# ----------------------------------------------------------------------------- fixed-target losses
@pytest.mark.parametrize("class_loss", ["focal", "qfl"])
def test_denoising_losses_equal_independent_computation(class_loss):
    dn, box_a = fixed_queries()
    outputs = dict(layer(), dn_outputs=dict(layer(DN_LOGITS, DN_BOXES), aux_outputs=[layer(DN_LOGITS, DN_BOXES)]))
    losses = DETRCriterion(C, class_loss=class_loss)(outputs, GT, dn)
    assignment = {(0, 0): (2, box_a), (0, 1): None, (0, 2): (2, box_a)}  # slot 3 is padding
    # official DINO normaliser: num_boxes (3) * num_groups (2)
    expected = expected_losses(DN_LOGITS, DN_BOXES, assignment, normalizer=3 * 2, class_loss=class_loss)
    assert_losses(losses, expected, "_dn")
    assert_losses(losses, expected, "_dn_0")


def test_fixed_target_losses_with_custom_suffix_and_normalizer():
    """The Co-DETR positive-query path: same method, its own suffix and normaliser."""
    dn, box_a = fixed_queries()
    criterion = DETRCriterion(C, class_loss="qfl")
    losses = criterion.fixed_target_losses(layer(DN_LOGITS, DN_BOXES), dn, normalizer=2.0, suffix="_aux0")
    assert set(losses) == {"loss_class_aux0", "loss_bbox_aux0", "loss_giou_aux0"}
    assignment = {(0, 0): (2, box_a), (0, 1): None, (0, 2): (2, box_a)}
    assert_losses(losses, expected_losses(DN_LOGITS, DN_BOXES, assignment, 2.0, "qfl"), "_aux0")


@pytest.mark.parametrize("class_loss", ["focal", "qfl"])
def test_padded_slots_contribute_nothing(class_loss):
    dn, _ = fixed_queries()
    criterion = DETRCriterion(C, class_loss=class_loss)
    reference = criterion.fixed_target_losses(layer(DN_LOGITS, DN_BOXES), dn, 6.0, "_dn")
    logits, boxes = [[list(r) for r in DN_LOGITS[0]]], [[list(r) for r in DN_BOXES[0]]]
    logits[0][3] = [float("nan"), -50.0, float("inf")]
    boxes[0][3] = [float("nan"), 0.0, 1.0, -1.0]
    changed = criterion.fixed_target_losses(layer(logits, boxes), dn, 6.0, "_dn")
    for name in reference:
        assert changed[name].item() == reference[name].item(), name


def test_negatives_only_get_the_class_loss():
    dn, _ = fixed_queries()
    criterion = DETRCriterion(C, class_loss="qfl")
    reference = criterion.fixed_target_losses(layer(DN_LOGITS, DN_BOXES), dn, 6.0, "_dn")
    boxes = [[list(r) for r in DN_BOXES[0]]]
    boxes[0][1] = [0.9, 0.1, 0.3, 0.3]  # negative slot's box: no loss depends on it
    moved_box = criterion.fixed_target_losses(layer(DN_LOGITS, boxes), dn, 6.0, "_dn")
    logits = [[list(r) for r in DN_LOGITS[0]]]
    logits[0][1] = [4.0, 4.0, 4.0]  # negative slot's logits: class loss only
    moved_logits = criterion.fixed_target_losses(layer(logits, DN_BOXES), dn, 6.0, "_dn")
    for name in reference:
        assert moved_box[name].item() == reference[name].item()
    assert moved_logits["loss_class_dn"].item() > reference["loss_class_dn"].item()
    assert moved_logits["loss_bbox_dn"].item() == reference["loss_bbox_dn"].item()
    assert moved_logits["loss_giou_dn"].item() == reference["loss_giou_dn"].item()


@pytest.mark.parametrize("class_loss", ["focal", "qfl"])
def test_finite_and_differentiable(class_loss):
    dn, _ = fixed_queries()
    final, dn_out = layer(requires_grad=True), layer(DN_LOGITS, DN_BOXES, requires_grad=True)
    outputs = dict(final, aux_outputs=[layer()], enc_outputs=layer(), dn_outputs=dn_out)
    losses = DETRCriterion(C, class_loss=class_loss)(outputs, GT, dn)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for t in (final["pred_logits"], final["pred_boxes"], dn_out["pred_logits"], dn_out["pred_boxes"]):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert final["pred_boxes"].grad.abs().sum() > 0
    # padded slot: no gradient at all; negative slot: no box gradient
    assert (dn_out["pred_logits"].grad[0, 3] == 0).all() and (dn_out["pred_boxes"].grad[0, 3] == 0).all()
    assert (dn_out["pred_boxes"].grad[0, 1] == 0).all() and (dn_out["pred_logits"].grad[0, 1] != 0).all()


def test_qfl_quality_target_is_detached():
    """The IoU target must not carry gradient to the boxes: with zero box weights the boxes get none."""
    out = layer(requires_grad=True)
    losses = DETRCriterion(C, class_loss="qfl", weight_bbox=0.0, weight_giou=0.0)(out, GT)
    sum(losses.values()).backward()
    assert out["pred_boxes"].grad is None or (out["pred_boxes"].grad == 0).all()


def test_no_dn_keys_without_denoising_queries():
    """The ``_dn`` losses come with the denoising queries (a detector with denoising gives a group on
    every batch, test_dino's empty-batch test); without them, none, last layer or aux."""
    outputs = dict(layer(), aux_outputs=[layer(), layer()])
    losses = DETRCriterion(C)(outputs, GT, None)
    assert set(losses) == {f"{n}{s}" for n in ("loss_class", "loss_bbox", "loss_giou") for s in ("", "_0", "_1")}


def test_low_precision_predictions_give_fp32_losses():
    out = {k: v.bfloat16() for k, v in layer().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = DETRCriterion(C)(out, GT)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_bad_class_loss():
    with pytest.raises(ValueError, match="class_loss"):
        DETRCriterion(C, class_loss="ce")


# ----------------------------------------------------------------------------- DETR's softmax loss
def softmax_class_loss(logits, assignment, eos_coef=0.1):
    """DETR's ``F.cross_entropy(weight=[1, ..., 1, eos_coef])`` written out: the weighted mean of
    ``-log softmax(x)[y]`` over the assigned slots (y = the label, or C = "no object")."""
    total = weights = 0.0
    for (b, q), target in assignment.items():
        x = logits[b][q]
        y = target[0] if target is not None else C
        w = 1.0 if target is not None else eos_coef
        total += w * -(x[y] - math.log(sum(math.exp(v) for v in x)))
        weights += w
    return total / weights


NO_OBJECT = [[0.4, -0.2, 1.0], [0.0, 0.7, -0.5]]  # the extra "no object" logit of each query


def test_softmax_matched_losses_equal_independent_computation():
    logits = [[row + [NO_OBJECT[b][q]] for q, row in enumerate(img)] for b, img in enumerate(LOGITS)]
    criterion = DETRCriterion(C, class_loss="softmax", eos_coef=0.1)
    assert criterion.matcher.class_cost == "softmax" and criterion.matcher.cost_class == 1.0
    losses = criterion(layer(logits), GT)
    expected = expected_losses(LOGITS, BOXES, MATCHING, normalizer=3)  # the box losses: / num_boxes
    expected["loss_class"] = softmax_class_loss(logits, MATCHING)  # the class loss: a weighted mean
    assert_losses(losses, expected)
    # a class weight of 1 for "no object": the plain mean over the 6 queries
    plain = DETRCriterion(C, class_loss="softmax", eos_coef=1.0)(layer(logits), GT)["loss_class"]
    assert plain.item() == pytest.approx(softmax_class_loss(logits, MATCHING, eos_coef=1.0), rel=1e-5)


def test_softmax_fixed_target_losses_skip_padding():
    dn, box_a = fixed_queries()
    logits = [[row + [0.3 * i] for i, row in enumerate(DN_LOGITS[0])]]
    logits[0][3] = [float("nan")] * 4  # padding: in no loss
    losses = DETRCriterion(C, class_loss="softmax").fixed_target_losses(layer(logits, DN_BOXES), dn, 6.0, "_dn")
    assignment = {(0, 0): (2, box_a), (0, 1): None, (0, 2): (2, box_a)}
    assert losses["loss_class_dn"].item() == pytest.approx(softmax_class_loss(logits, assignment), rel=1e-5)
    expected = expected_losses(DN_LOGITS, DN_BOXES, assignment, normalizer=6.0)
    assert losses["loss_bbox_dn"].item() == pytest.approx(expected["loss_bbox"], rel=1e-5)


def test_softmax_loss_needs_k_plus_1_logits():
    with pytest.raises(ValueError, match="num_classes \\+ 1 = 4 logits"):
        DETRCriterion(C, class_loss="softmax")(layer(), GT)
