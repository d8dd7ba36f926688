"""DETR on tiny models (CPU, seconds): registration, a training step (losses of every layer,
gradients), the softmax loss with "no object", batched = single-image inference, the official
PostProcess, and the checks of its parts."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY

from codetr.layers.box_ops import box_cxcywh_to_xyxy
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import ConditionalDecoder, DETRDecoder
from codetr.modeling.encoders import DETREncoder
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import DETR
from codetr.modeling.queries import LearnedPointQueries, LearnedPositionQueries
from codetr.modeling.transformers import SingleScaleTransformer
from support.detr import D, K, tiny_detr
from support.matching import brute_force_assignment
from support.inference import assert_batched_equals_single
from support.models import BATCH, make_input
from support.training import assert_overfits_two_images


def test_registered():
    assert META_ARCH_REGISTRY.get("DETR") is DETR


def test_training_step_losses_and_gradients():
    model = tiny_detr().train()
    losses = model(BATCH)
    assert set(losses) == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("", "_0")}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == ["backbone.res5.weight", "backbone.res5.bias"]  # the neck reads res4
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_class_loss_is_the_official_weighted_cross_entropy():
    """The last layer's class loss equals DETR's ``F.cross_entropy(logits.transpose(1, 2),
    target_classes, empty_weight)`` with the targets of an independent brute-force matching."""

    model = tiny_detr(num_queries=5).train()
    images = model.preprocess_image(BATCH)
    targets = model.prepare_targets(BATCH, images.image_sizes)
    out = model.forward_queries(model.encode(images))
    logits, boxes = out["pred_logits"].detach(), out["pred_boxes"].detach()
    assert logits.shape[-1] == K + 1
    target_classes = torch.full(logits.shape[:2], K, dtype=torch.long)
    for b, t in enumerate(targets):
        prob = logits[b].softmax(-1)
        giou = torch.stack([torch.stack([_giou(boxes[b, q], t["boxes"][g]) for g in range(len(t["labels"]))])
                            for q in range(5)])
        cost = -prob[:, t["labels"]] + 5 * torch.cdist(boxes[b], t["boxes"], p=1) - 2 * giou
        best, _ = brute_force_assignment(lambda q, g: cost[q, g], 5, len(t["labels"]))
        for g, q in enumerate(best):
            target_classes[b, q] = t["labels"][g]
    empty_weight = torch.ones(K + 1)
    empty_weight[-1] = 0.1
    expected = F.cross_entropy(logits.transpose(1, 2), target_classes, empty_weight)
    losses = model.criterion(out, targets)
    torch.testing.assert_close(losses["loss_class"], expected, rtol=1e-5, atol=1e-6)


def _giou(a, b):
    a, b = box_cxcywh_to_xyxy(a), box_cxcywh_to_xyxy(b)
    inter = (torch.min(a[2:], b[2:]) - torch.max(a[:2], b[:2])).clamp(min=0).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    hull = (torch.max(a[2:], b[2:]) - torch.min(a[:2], b[:2])).prod()
    return inter / union - (hull - union) / hull


def test_batched_inference_equals_single_image():
    model = tiny_detr(dropout=0.1).eval()
    inputs = [make_input(128, 128, seed=5), make_input(64, 96, seed=6)]  # padded to 128 x 128
    assert_batched_equals_single(model, inputs, num_detections=10)


def test_inference_is_the_official_postprocess():
    """Per query: softmax, drop "no object", best class and its probability; with as many
    selections as queries every query is returned once, in original image coordinates."""
    model = tiny_detr(num_queries=12, select=12).eval()
    inputs = [make_input(64, 96, seed=7, orig=(128, 192))]
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
        images = model.preprocess_image(inputs)
        out = model.forward_queries(model.encode(images))
    prob = out["pred_logits"][0].softmax(-1)
    scores, labels = prob[:, :K].max(-1)
    boxes = box_cxcywh_to_xyxy(out["pred_boxes"][0]) * torch.tensor([192, 128, 192, 128])
    order = scores.argsort(descending=True)
    assert inst.image_size == (128, 192) and len(inst) == 12
    torch.testing.assert_close(inst.scores, scores[order])
    assert torch.equal(inst.pred_classes, labels[order])
    torch.testing.assert_close(inst.pred_boxes.tensor, boxes[order], atol=1e-4, rtol=1e-5)


def test_bfloat16_autocast_training_step():
    model = tiny_detr().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(BATCH)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()


def test_tiny_model_overfits_two_images():
    assert_overfits_two_images(tiny_detr(num_queries=12, seed=1), BATCH, steps=80)


def test_bad_parts_are_refused():
    m = tiny_detr()
    with pytest.raises(ValueError, match="class_loss='softmax'"):
        DETR(m.backbone, m.position_embedding, m.neck, m.transformer, DETRCriterion(K))
    with pytest.raises(ValueError, match="class head has 4 outputs; expected criterion.num_classes \\+ 1 = 6"):
        DETR(m.backbone, m.position_embedding, m.neck, m.transformer, DETRCriterion(5, class_loss="softmax"))
    with pytest.raises(ValueError, match="num_queries=7"):
        DETR(m.backbone, m.position_embedding, m.neck, m.transformer, m.criterion, num_queries=7)
    with pytest.raises(ValueError, match="class_cost='focal'"):
        DETRCriterion(K, HungarianMatcher(), class_loss="softmax")
    with pytest.raises(ValueError, match="class_cost='softmax'"):
        DETRCriterion(K, HungarianMatcher(class_cost="softmax"), class_loss="focal")
    with pytest.raises(ValueError, match="0-d references but the decoder's box coder expects 2-d"):
        SingleScaleTransformer(DETREncoder(1, D, 4, 64), ConditionalDecoder(1, D, 4, 64), LearnedPositionQueries(3, D))
    with pytest.raises(ValueError, match="2-d references but the decoder's box coder expects 0-d"):
        SingleScaleTransformer(DETREncoder(1, D, 4, 64), DETRDecoder(1, D, 4, 64), LearnedPointQueries(3, D))
