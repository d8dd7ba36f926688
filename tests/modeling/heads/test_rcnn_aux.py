"""Faster R-CNN auxiliary head (Detectron2 RPN + StandardROIHeads): Co-DETR's settings, the
samples it returns are the RoI head's sampled proposals, loss scaling."""
import math

import torch
from detectron2.structures import Boxes, pairwise_iou

from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from support.heads import pyramid_batch

K, C = 3, 16
NAMES, STRIDES = ["p2", "p3", "p4", "p5", "p6", "p7"], [4, 8, 16, 32, 64, 128]


def make_head(**kw):
    torch.manual_seed(0)
    kw = {"fc_dim": 32, "pre_nms_topk": (300, 100), "post_nms_topk": (100, 100), **kw}
    return build_rcnn_aux_head(K, NAMES, STRIDES, in_channels=C, num_roi_levels=5, **kw)


def test_official_settings():
    head = make_head(fc_dim=1024, pre_nms_topk=(4000, 1000), post_nms_topk=(1000, 1000))
    rpn, roi = head.rpn, head.roi_heads
    cells = list(rpn.anchor_generator.cell_anchors.buffers())
    assert len(cells) == 6 and all(c.shape == (9, 4) for c in cells)
    # p2: sizes 16, 16 * 2^(1/3), 16 * 2^(2/3) at ratios h/w 0.5, 1, 2, centred at 0 (offset 0)
    wh = cells[0][:, 2:] - cells[0][:, :2]
    expected = [(s / math.sqrt(r), s * math.sqrt(r)) for s in (16, 20.158737, 25.398417) for r in (0.5, 1, 2)]
    torch.testing.assert_close(wh, torch.tensor(expected), rtol=1e-5, atol=1e-4)
    assert rpn.anchor_generator.offset == 0.0 and rpn.anchor_generator.strides == STRIDES
    assert rpn.batch_size_per_image == 256 and rpn.positive_fraction == 0.5
    assert rpn.anchor_matcher.thresholds[1:-1] == [0.3, 0.7] and rpn.anchor_matcher.allow_low_quality_matches
    assert rpn.pre_nms_topk[True] == 4000 and rpn.post_nms_topk[True] == 1000 and rpn.nms_thresh == 0.7
    assert rpn.loss_weight == {"loss_rpn_cls": 12.0, "loss_rpn_loc": 12.0}
    assert roi.batch_size_per_image == 512 and roi.positive_fraction == 0.25 and roi.proposal_append_gt
    assert roi.proposal_matcher.thresholds[1:-1] == [0.5] and not roi.proposal_matcher.allow_low_quality_matches
    assert roi.box_in_features == NAMES[:5]
    pred = roi.box_predictor
    assert pred.box_reg_loss_type == "giou" and pred.box2box_transform.weights == (10.0, 10.0, 5.0, 5.0)
    assert pred.loss_weight == {"loss_cls": 12.0, "loss_box_reg": 120.0}
    assert pred.cls_score.out_features == K + 1 and pred.bbox_pred.out_features == 4 * K
    assert [m.out_features for m in roi.box_head.children() if isinstance(m, torch.nn.Linear)] == [1024, 1024]


def test_samples_are_the_sampled_proposals():
    head = make_head().train()
    images, feats, gts = pyramid_batch(NAMES, STRIDES, C)
    captured = []
    original = head.roi_heads.label_and_sample_proposals

    def spy(proposals, targets):
        out = original(proposals, targets)
        captured.append(out)
        return out

    head.roi_heads.label_and_sample_proposals = spy
    losses, samples = head(images, feats, gts)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    (sampled,) = captured
    for b, (p, inst) in enumerate(zip(sampled, gts)):
        fg = p.gt_classes < K
        torch.testing.assert_close(samples.pos_boxes[b], p.proposal_boxes.tensor[fg])
        torch.testing.assert_close(samples.neg_boxes[b], p.proposal_boxes.tensor[~fg])
        # independent check of the assignment: a positive overlaps its target >= 0.5 and has
        # its class; every GT box was appended as a proposal and is a positive; negatives
        # overlap no GT by 0.5
        iou = pairwise_iou(Boxes(samples.pos_boxes[b]), inst.gt_boxes)
        best = iou.argmax(1)
        assert (iou.max(1).values >= 0.5).all()
        torch.testing.assert_close(samples.pos_targets[b], inst.gt_boxes.tensor[best])
        assert torch.equal(samples.pos_labels[b], inst.gt_classes[best])
        for g in inst.gt_boxes.tensor:
            assert ((samples.pos_boxes[b] - g).abs().sum(1) < 1e-4).any()
        assert (pairwise_iou(Boxes(samples.neg_boxes[b]), inst.gt_boxes).max(1).values < 0.5).all()
        assert not samples.pos_boxes[b].requires_grad
    assert samples.pos_feats is None


def test_losses_scaled_by_lambda2_times_decoder_layers():
    images, feats, gts = pyramid_batch(NAMES, STRIDES, C)
    scaled = make_head(loss_scale=12.0).train()
    plain = make_head(loss_scale=1.0, giou_weight=1.0).train()
    plain.load_state_dict(scaled.state_dict())
    torch.manual_seed(3)
    a, _ = scaled(images, feats, gts)
    torch.manual_seed(3)
    b, _ = plain(images, feats, gts)
    for name, factor in (("loss_rpn_cls", 12), ("loss_rpn_loc", 12), ("loss_cls", 12), ("loss_box_reg", 120)):
        torch.testing.assert_close(a[name], factor * b[name])


def test_gradients_reach_the_pyramid_and_features_are_pooled():
    head = make_head(return_features=True).train()
    images, feats, gts = pyramid_batch(NAMES, STRIDES, C)
    feats = {k: v.requires_grad_() for k, v in feats.items()}
    losses, samples = head(images, feats, gts)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert all(feats[n].grad.abs().sum() > 0 for n in NAMES[:5])
    assert samples.pos_feats[0].shape == (len(samples.pos_boxes[0]), C)
    assert samples.neg_feats[1].shape == (len(samples.neg_boxes[1]), C)


def test_eval_returns_detections():
    head = make_head().eval()
    images, feats, _ = pyramid_batch(NAMES, STRIDES, C)
    with torch.no_grad():
        results = head(images, feats)
    assert len(results) == 2
    for r, size in zip(results, images.image_sizes):
        assert r.image_size == size and len(r) > 0 and r.pred_classes.max() < K
