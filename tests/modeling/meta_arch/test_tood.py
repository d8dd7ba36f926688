"""TOOD meta-architecture: registration, a bf16-autocast training step, the ATSS -> TAL switch at
the configured iteration, inference in original image coordinates, and the head as a Co-DETR
auxiliary head on a given pyramid."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import ImageList, Instances
from detectron2.utils.events import EventStorage

import codetr.modeling.heads.tood_head as tood_head_module
from codetr.modeling.heads.base import AssignedSamples
from codetr.modeling.heads.tood_head import TOODHead
from codetr.modeling.meta_arch import TOOD
from codetr.modeling.meta_arch.tood import LastLevelP6P7
from support.one_stage import WIDTH, one_stage_batch, random_input, tiny_tood


def test_registered():
    assert META_ARCH_REGISTRY.get("TOOD") is TOOD
    assert issubclass(TOOD, DenseDetector)  # Detectron2's one-stage flow, not a copy of it


def test_p6p7_on_output_without_relu():
    block = LastLevelP6P7(4, 4, "p5")
    p5 = torch.randn(1, 4, 8, 8)
    p6, p7 = block(p5)
    torch.testing.assert_close(p7, block.p7(block.p6(p5)))  # P7 = conv(P6), mmdet "on_output"
    block.relu_before_p7 = True
    torch.testing.assert_close(block(p5)[1], block.p7(torch.relu(block.p6(p5))))


def test_training_step_bf16_autocast_finite():
    model = tiny_tood(initial_epochs=0)
    model.train()
    for iteration in (0, 5):
        with EventStorage(iteration), torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(one_stage_batch())
        assert set(losses) == {"loss_cls", "loss_bbox"}
        for v in losses.values():
            assert v.dtype == torch.float32 and torch.isfinite(v)
        assert losses["loss_bbox"].item() > 0
        sum(losses.values()).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "initial_epochs, epochs, max_iter, switch",
    [(2, 12, 36, 6), (4, 12, 300, 100), (4, 12, 40, 13), (2 / 3, 2, 4, 1), (1, 3, 2, 1)],  # round(e / E * max_iter)
)
def test_switch_iteration_is_a_fraction_of_the_run(initial_epochs, epochs, max_iter, switch):
    head = tiny_tood(initial_epochs=initial_epochs, epochs=epochs, max_iter=max_iter).head
    assert head.initial_iters == switch
    assert [head.use_initial_assigner(i) for i in (switch - 1, switch)] == [True, False]


def test_atss_to_tal_switch_at_the_configured_iteration(monkeypatch):
    # epoch 2 of a 12-epoch schedule run in 36 iterations: ATSS for iterations 0..5, TAL from 6 on
    model = tiny_tood(initial_epochs=2, epochs=12, max_iter=36)
    model.train()
    assert model.head.initial_iters == 6
    calls = []
    real_atss, real_tal = tood_head_module.atss_assign, tood_head_module.tal_assign
    monkeypatch.setattr(tood_head_module, "atss_assign", lambda *a, **k: calls.append("atss") or real_atss(*a, **k))
    monkeypatch.setattr(tood_head_module, "tal_assign", lambda *a, **k: calls.append("tal") or real_tal(*a, **k))
    seen = {}
    for iteration in (0, 5, 6, 7):
        calls.clear()
        with EventStorage(iteration):
            model(one_stage_batch())
        seen[iteration] = set(calls)
    assert seen == {0: {"atss"}, 5: {"atss"}, 6: {"tal"}, 7: {"tal"}}
    assert [model.head.use_initial_assigner(i) for i in (5, 6)] == [True, False]


def test_inference_in_original_image_coordinates():
    model = tiny_tood()
    with torch.no_grad():  # raise the scores above the 0.05 threshold
        model.head.tood_cls.bias.fill_(2.0)
        model.head.cls_prob_module[2].bias.fill_(2.0)
    model.eval()
    # a 64 x 96 network input of an original 128 x 192 image
    inputs = [random_input(64, 96, [], [], height=128, width=192), random_input(64, 80, [], [])]
    with torch.no_grad():
        out = model(inputs)
        images = model.preprocess_image(inputs)
        raw = model.head(images, model.backbone(images.tensor))
    assert len(out) == 2
    first = out[0]["instances"]
    assert first.image_size == (128, 192)
    assert set(first.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
    assert 0 < len(first) <= 100
    assert (first.scores > 0.05).all() and first.pred_classes.dtype == torch.int64
    assert first.scores.tolist() == sorted(first.scores.tolist(), reverse=True)
    box = first.pred_boxes.tensor
    assert (box[:, 0::2] >= 0).all() and (box[:, 0::2] <= 192).all() and (box[:, 1::2] <= 128).all()
    # the same detections as the head's in the 64 x 96 input, scaled by 2
    torch.testing.assert_close(box, raw[0].pred_boxes.tensor * 2)
    assert out[1]["instances"].image_size == (64, 80)


def test_as_co_detr_auxiliary_head_on_a_given_pyramid():
    # Co-DETR protocol: head(images, {"p3": ..., "p4": ...}, gt_instances) -> (losses, samples)
    torch.manual_seed(0)
    head = TOODHead(num_classes=4, in_features=["p3", "p4"], strides=[8, 16], in_channels=16, feat_channels=16,
                    stacked_convs=2, num_groups=4, anchor_scale=4, loss_scale=12.0)
    pyramid = {"p3": torch.randn(2, 16, 8, 10), "p4": torch.randn(2, 16, 4, 5)}
    images = ImageList(torch.zeros(2, 3, 64, 80), [(64, 80), (56, 64)])
    gts = [x["instances"] for x in one_stage_batch()]
    head.train()
    losses, samples = head(images, pyramid, gts)
    assert set(losses) == {"loss_cls", "loss_bbox"} and all(torch.isfinite(v) for v in losses.values())
    assert isinstance(samples, AssignedSamples) and len(samples.pos_boxes) == 2
    anchors = torch.cat(head.anchors([pyramid["p3"], pyramid["p4"]]))
    for b, inst in enumerate(gts):
        assert samples.pos_boxes[b].shape[0] > 0
        # positives are anchors, each matched to one of the image's GT boxes with its label
        assert all((anchors == p).all(1).any() for p in samples.pos_boxes[b])
        gt = inst.gt_boxes.tensor
        for tgt, lab in zip(samples.pos_targets[b], samples.pos_labels[b]):
            match = (gt == tgt).all(1).nonzero()[:, 0]
            assert len(match) >= 1 and int(lab) in inst.gt_classes[match].tolist()
        # negatives: anchors with centres in the unpadded image, disjoint from the positives
        h, w = images.image_sizes[b]
        ctr = (samples.neg_boxes[b][:, :2] + samples.neg_boxes[b][:, 2:]) / 2
        assert (ctr[:, 0] < w).all() and (ctr[:, 1] < h).all()
        inside = ((anchors[:, 0] + anchors[:, 2]) / 2 < w) & ((anchors[:, 1] + anchors[:, 3]) / 2 < h)
        assert samples.pos_boxes[b].shape[0] + samples.neg_boxes[b].shape[0] == int(inside.sum())
    # loss_scale multiplies the losses
    head12 = losses
    head.loss_scale = 1.0
    torch.manual_seed(0)
    losses1, _ = head(images, pyramid, gts)
    for k in losses1:
        torch.testing.assert_close(head12[k], losses1[k] * 12)
    head.eval()
    with torch.no_grad():
        dets = head(images, pyramid)
    assert len(dets) == 2 and all(isinstance(d, Instances) for d in dets)
    assert dets[1].image_size == (56, 64)


def test_model_rejects_missing_features():
    model = tiny_tood()
    with pytest.raises(ValueError, match="in_features"):
        TOOD(model.backbone, TOODHead(num_classes=2, in_features=["p2"], strides=[4], in_channels=WIDTH,
                                      feat_channels=WIDTH, stacked_convs=2, num_groups=4))


def test_p7_shape_spec():
    model = tiny_tood()
    shapes = model.backbone.output_shape()
    assert [shapes[f].stride for f in model.head.in_features] == model.head.strides
    assert all(isinstance(s, ShapeSpec) and s.channels == WIDTH for s in shapes.values())
