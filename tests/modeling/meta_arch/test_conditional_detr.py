"""Conditional DETR / DAB-DETR / DN-DETR / DN-Conditional-DETR on tiny models (CPU, seconds)."""
import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY

from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import ConditionalDecoder
from codetr.modeling.encoders import DETREncoder
from codetr.modeling.meta_arch import ConditionalDETR
from codetr.modeling.queries import LearnedPointQueries
from codetr.modeling.queries.denoising import dn_detr_denoising
from codetr.modeling.transformers import SingleScaleTransformer
from support.detr import D, K, tiny_conditional_detr
from support.inference import assert_batched_equals_single
from support.models import BATCH, make_input
from support.training import assert_overfits_two_images


VARIANTS = ["conditional", "dab", "dn_dab", "dn_conditional"]


def test_registered():
    assert META_ARCH_REGISTRY.get("ConditionalDETR") is ConditionalDETR


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_step_losses_and_gradients(variant):
    model = tiny_conditional_detr(variant).train()
    losses = model(BATCH)
    suffixes = ["", "_0"] + (["_dn", "_dn_0"] if variant.startswith("dn_") else [])
    assert set(losses) == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in suffixes}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == ["backbone.res5.weight", "backbone.res5.bias"]  # the neck reads res4 (DC5-like)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_inference_equals_single_image(variant):
    model = tiny_conditional_detr(variant, dropout=0.1).eval()
    inputs = [make_input(128, 128, seed=5), make_input(64, 96, seed=6)]  # padded to 128 x 128
    assert_batched_equals_single(model, inputs, num_detections=20)


def test_dn_queries_take_noised_centres_as_reference_points():
    model = tiny_conditional_detr("dn_conditional").train()
    images = model.preprocess_image(BATCH)
    fixed = model.denoising(model.prepare_targets(BATCH, images.image_sizes))
    group = model.fixed_group(fixed)
    assert group.reference.shape[-1] == 2 and group.query_pos is None
    torch.testing.assert_close(group.reference, fixed.ref_boxes[..., :2])
    v = fixed.valid
    torch.testing.assert_close(fixed.ref_boxes[..., 2:][v], fixed.boxes[..., 2:][v], atol=1e-6, rtol=0)


@pytest.mark.parametrize("variant", ["dn_dab", "dn_conditional"])
def test_empty_batch_trains_with_denoising(variant):
    """A batch without boxes gives every parameter a gradient, as a batch with boxes does: with
    DDP a worker whose batch has no box must reduce the same parameters as the others (DN on
    points left its denoising queries' position head, ``ref_point_head``, out: issue 19)."""
    model = tiny_conditional_detr(variant).train()
    batch = [make_input(64, 64, seed=8), make_input(64, 96, seed=9)]
    assert all(len(x["instances"]) == 0 for x in batch)
    losses = model(batch)
    assert set(losses) == set(model(BATCH))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == ["backbone.res5.weight", "backbone.res5.bias"]  # the neck reads res4 (DC5-like)


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="noise_sizes=False"):
        m = tiny_conditional_detr("conditional")
        dec = ConditionalDecoder(2, D, 4, 64, num_classes=K, ref_dim=2, ref_point_head=True)
        ConditionalDETR(m.backbone, m.position_embedding, m.neck,
                        SingleScaleTransformer(m.transformer.encoder, dec, LearnedPointQueries(12, D)),
                        DETRCriterion(K), dn_detr_denoising(K, D, num_groups=2))
    with pytest.raises(ValueError, match="ref_point_head=True"):
        m = tiny_conditional_detr("conditional")
        ConditionalDETR(m.backbone, m.position_embedding, m.neck, m.transformer, DETRCriterion(K),
                        dn_detr_denoising(K, D, num_groups=2, noise_sizes=False))
    with pytest.raises(ValueError, match="2-d references but the decoder's box coder expects 4-d"):
        SingleScaleTransformer(DETREncoder(1, D, 4, 64), ConditionalDecoder(1, D, 4, 64, ref_dim=4),
                               LearnedPointQueries(3, D))
    with pytest.raises(ValueError, match="num_classes=5"):
        m = tiny_conditional_detr("conditional")
        ConditionalDETR(m.backbone, m.position_embedding, m.neck, m.transformer, DETRCriterion(K), num_classes=5)
    with pytest.raises(ValueError, match=r"embed_dim=16 but the widths of \{'queries': 8\} differ"):
        SingleScaleTransformer(DETREncoder(1, 16, 4, 64), ConditionalDecoder(1, 16, 4, 64, ref_dim=2),
                               LearnedPointQueries(3, 8), embed_dim=16)
    with pytest.raises(ValueError, match=r"embed_dim=32 but the widths of \{'encoder': 16, 'decoder': 16"):
        SingleScaleTransformer(DETREncoder(1, 16, 4, 64), ConditionalDecoder(1, 16, 4, 64, ref_dim=2),
                               LearnedPointQueries(3, 16), embed_dim=32)


@pytest.mark.parametrize("variant", ["conditional", "dn_dab"])
def test_bfloat16_autocast_training_step(variant):
    model = tiny_conditional_detr(variant).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(BATCH)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()


@pytest.mark.parametrize("variant", ["conditional", "dn_dab"])
def test_tiny_model_overfits_two_images(variant):
    assert_overfits_two_images(tiny_conditional_detr(variant, num_queries=12, seed=1), BATCH, steps=60)


def _co_conditional(variant="conditional_pos", seed=0):
    """Co-DETR on a single-scale detector (no public code exists): the encoder map (stride 16
    here) through the multi-scale adapter (strides 8..64) feeds an ATSS head whose positives
    become fixed-target queries of the shared decoder; a point decoder needs a ref_point_head
    for them (their positions come from their points)."""
    from codetr.modeling.heads.atss_head import ATSSHead
    from codetr.modeling.meta_arch import CoDETR
    from codetr.modeling.necks import SingleScalePyramidAdapter
    from codetr.modeling.queries.positive_queries import PositiveQueries

    det = tiny_conditional_detr("dab" if variant == "dab" else "conditional", seed=seed)
    if variant == "conditional_pos":  # the point decoder with a position head for the positive queries
        t = det.transformer
        torch.manual_seed(seed)
        t.decoder = ConditionalDecoder(2, D, 4, 64, dropout=0.0, num_classes=K, ref_dim=2, ref_point_head=True)
    adapter = SingleScalePyramidAdapter(D, in_stride=16, strides=(8, 16, 32, 64), num_groups=8)
    names = ["p3", "p4", "p5", "p6"]
    head = ATSSHead(K, names, [8, 16, 32, 64], in_channels=D, feat_channels=D, num_groups=8, loss_scale=12.0)
    return CoDETR(det, [head], PositiveQueries(1, D, K), pyramid_adapter=adapter)


@pytest.mark.parametrize("variant", ["conditional_pos", "dab"])
def test_co_detr_on_the_single_scale_family_trains_and_infers_as_the_detector(variant):
    model = _co_conditional(variant).train()
    losses = model(BATCH)
    assert {"loss_cls_head0", "loss_class_aux0", "loss_bbox_aux0", "loss_class", "loss_class_0"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for n, p in model.named_parameters()
               if n.startswith(("pyramid_adapter.", "aux_heads.", "positive_queries.")))
    model.eval()
    with torch.no_grad():
        co, alone = model(BATCH), model.detector(BATCH)
    for a, b in zip(co, alone):  # inference is the detector alone
        assert torch.equal(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor)
