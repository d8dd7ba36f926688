"""What the dense heads share (``codetr.modeling.heads.dense``): dense targets from assignments,
the assignment as ``AssignedSamples`` (with the feature at each anchor), the samples type's checks,
the tower block, and the two call protocols. Checked on hand-made cases."""
from types import SimpleNamespace

import pytest
import torch
from detectron2.structures import Boxes, ImageList, Instances

from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.base import AssignedSamples
from codetr.modeling.heads.dense import (
    DenseTargets,
    assigned_samples,
    centerness_targets,
    conv_gn_relu,
    dense_targets,
)
from codetr.modeling.heads.tood_head import TOODHead

# 4 anchors (one 2 x 2 level of stride 10, side 20) centred at (0, 0), (10, 0), (0, 10), (10, 10)
ANCHORS = torch.tensor([[-10.0, -10, 10, 10], [0, -10, 20, 10], [-10, 0, 10, 20], [0, 0, 20, 20]])
GT = [torch.tensor([[1.0, 2, 15, 16], [3, 3, 9, 9]]), torch.zeros(0, 4)]


def _assignments():
    # image 0: anchor 1 -> GT 1 (class 4), anchor 3 -> GT 0 (class 2); image 1: no ground truth
    a0 = SimpleNamespace(gt_index=torch.tensor([-1, 1, -1, 0]), labels=torch.tensor([-1, 4, -1, 2]))
    a1 = SimpleNamespace(gt_index=torch.full((4,), -1), labels=torch.full((4,), -1))
    return [a0, a1]


def test_dense_targets_hand_made():
    t = dense_targets(ANCHORS, _assignments(), GT, num_classes=5)
    assert t.gt_index.tolist() == [[-1, 1, -1, 0], [-1, -1, -1, -1]]
    assert t.labels.tolist() == [[5, 4, 5, 2], [5, 5, 5, 5]]
    expected = torch.zeros(2, 4, 4)
    expected[0, 1], expected[0, 3] = GT[0][1], GT[0][0]
    torch.testing.assert_close(t.boxes, expected)
    assert t.positive.tolist() == [[False, True, False, True], [False] * 4]
    assert t.anchors is ANCHORS


@pytest.mark.parametrize("with_feats", [False, True])
def test_assigned_samples_hand_made(with_feats):
    t = dense_targets(ANCHORS, _assignments(), GT, num_classes=5)
    # image 0 is 20 x 20: every centre inside; image 1 is 5 (h) x 8 (w): only the centre (0, 0)
    feats = [torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)] if with_feats else None
    s = assigned_samples([(20, 20), (5, 8)], t, feats)
    torch.testing.assert_close(s.pos_boxes[0], ANCHORS[[1, 3]])
    assert s.pos_labels[0].tolist() == [4, 2]
    torch.testing.assert_close(s.pos_targets[0], GT[0][[1, 0]])
    torch.testing.assert_close(s.neg_boxes[0], ANCHORS[[0, 2]])
    assert s.pos_boxes[1].shape == (0, 4)
    torch.testing.assert_close(s.neg_boxes[1], ANCHORS[[0]])
    assert s.has_features == with_feats
    if with_feats:
        # the feature of anchor i (row-major location (i // 2, i % 2)) of image b: feats[0][b, :, y, x]
        f = feats[0]
        torch.testing.assert_close(s.pos_feats[0], torch.stack([f[0, :, 0, 1], f[0, :, 1, 1]]))
        torch.testing.assert_close(s.neg_feats[0], torch.stack([f[0, :, 0, 0], f[0, :, 1, 0]]))
        torch.testing.assert_close(s.neg_feats[1], f[1, :, 0, 0][None])
        assert s.pos_feats[1].shape == (0, 3)


def test_assigned_samples_checks_its_fields():
    one = [torch.zeros(0, 4)]
    with pytest.raises(ValueError, match="one entry per image"):
        AssignedSamples(one, [], one, one)
    with pytest.raises(ValueError, match="both"):
        AssignedSamples(one, [torch.zeros(0)], one, one, pos_feats=[torch.zeros(0, 3)])
    with pytest.raises(ValueError, match="pos_feats"):
        AssignedSamples(one, [torch.zeros(0)], one, one, pos_feats=[], neg_feats=[])
    assert not AssignedSamples(one, [torch.zeros(0)], one, one).has_features


def test_centerness_hand_computed():
    # centre (10, 10) in [0, 0, 40, 20]: l, r = 10, 30; t, b = 10, 10 -> sqrt(1/3 * 1)
    c = centerness_targets(torch.tensor([[5.0, 5, 15, 15]]), torch.tensor([[0.0, 0, 40, 20]]))
    torch.testing.assert_close(c, torch.tensor([(1 / 3) ** 0.5]))


def test_tower_block_keys_and_shape():
    block = conv_gn_relu(8, 16, 4)
    assert [k for k in block.state_dict()] == ["0.weight", "1.weight", "1.bias"]
    out = block(torch.randn(2, 8, 5, 6))
    assert out.shape == (2, 16, 5, 6) and (out >= 0).all()


def _instances(size, boxes, classes):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(classes)
    return inst


@pytest.mark.parametrize("kind", ["atss", "thead"])
def test_call_protocols(kind):
    """``head(feats)`` is ``predict``; ``head(images, features, gt)`` is losses + samples (the same
    as ``losses`` and ``assigned_samples``) in training, detections in eval."""
    torch.manual_seed(0)
    kw = dict(in_channels=8, feat_channels=8, num_groups=2, return_features=True)
    head = ATSSHead(3, ["p3", "p4"], [8, 16], **kw) if kind == "atss" else TOODHead(
        3, ["p3", "p4"], [8, 16], stacked_convs=2, **kw)
    feats = {"p3": torch.randn(2, 8, 6, 8), "p4": torch.randn(2, 8, 3, 4)}
    maps = [feats["p3"], feats["p4"]]
    images = ImageList(torch.zeros(2, 3, 48, 64), [(48, 64), (40, 50)])
    gts = [_instances((48, 64), [[0, 0, 56, 44]], [1]), _instances((40, 50), [[4, 6, 60, 46]], [2])]
    for a, b in zip(head(maps), head.predict(maps)):
        torch.testing.assert_close(a, b)
    losses, samples = head.train()(images, feats, gts)
    expected_losses, targets = head.losses(head.anchors(maps), gts, head.predict(maps))
    for k in expected_losses:
        torch.testing.assert_close(losses[k], expected_losses[k])
    expected = assigned_samples(images.image_sizes, targets, maps)
    for field in ("pos_boxes", "pos_labels", "pos_targets", "neg_boxes", "pos_feats", "neg_feats"):
        for x, y in zip(getattr(samples, field), getattr(expected, field)):
            torch.testing.assert_close(x, y)
    assert sum(len(p) for p in samples.pos_boxes) > 0
    assert isinstance(targets, DenseTargets)
    with pytest.raises(ValueError, match="gt_instances"):
        head(images, feats)
    with pytest.raises(TypeError, match="feature dict"):
        head(images)
    with pytest.raises(TypeError, match="list of maps"):
        head(maps, feats)
    head.eval()
    with torch.no_grad():
        results = head(images, feats)
    assert [r.image_size for r in results] == images.image_sizes
