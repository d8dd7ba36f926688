"""AdaMixer / DEQDet / RNNDet meta-architectures on tiny models (CPU, seconds)."""
import dataclasses

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY

from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner, SequentialRefinement, adamixer_layers
from codetr.modeling.meta_arch import AdaMixer, DEQDet, RNNDet
from support.adamixer import D, K, Q, randomise, tiny_adamixer
from support.models import BATCH, make_input


def keys(suffixes):
    return {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in suffixes}


def test_registered():
    for cls in (AdaMixer, DEQDet, RNNDet):
        assert META_ARCH_REGISTRY.get(cls.__name__) is cls


@pytest.mark.parametrize("cls,num_outputs", [(DEQDet, 9), (RNNDet, 4), (AdaMixer, 3)])
def test_training_step_supervises_every_output(cls, num_outputs):
    """DEQDet: init, init^1, init^2 and the 6 supervision positions; RNNDet: init + 3 steps;
    AdaMixer: 3 stages. Every trainable parameter gets a finite gradient."""
    model = tiny_adamixer(cls).train()
    losses = model(BATCH)
    assert set(losses) == keys([""] + [f"_{i}" for i in range(num_outputs - 1)])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_class"] > 0 and losses["loss_giou"] > 0
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert "queries.boxes" in model.state_dict() and not any(n == "queries.boxes" for n, _ in model.named_parameters())


def test_bfloat16_autocast_training_step():
    model = tiny_adamixer(DEQDet, loop=FixedPointRefinement(refinement_steps=3, supervision_positions=(1, 3))).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(BATCH)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_first_prediction_is_the_whole_image_and_targets_are_per_image():
    """The box heads start at zero: g's boxes are the initial whole-image boxes, i.e. (0.5, 0.5,
    1, 1) of each unpadded image (64 x 64 padded to 64 x 128 in the batch)."""
    model = tiny_adamixer(DEQDet).eval()
    images = model.preprocess_image(BATCH)
    enc = model.encode(images)
    assert enc.image_wh.tolist() == [[64.0, 64.0], [128.0, 64.0]]
    model.decoder.loop.inference_steps = 0
    with torch.no_grad():
        out = model.forward_queries(enc)
    torch.testing.assert_close(out["pred_boxes"], torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(2, Q, 4))
    with torch.no_grad():
        (r0, r1) = model(BATCH)
    torch.testing.assert_close(r0["instances"].pred_boxes.tensor[0], torch.tensor([0.0, 0.0, 64.0, 64.0]))
    torch.testing.assert_close(r1["instances"].pred_boxes.tensor[0], torch.tensor([0.0, 0.0, 128.0, 64.0]))


def test_padded_positions_of_every_level_are_zero():
    model = tiny_adamixer(DEQDet).eval()
    with torch.no_grad():
        enc = model.encode(model.preprocess_image(BATCH))
    assert enc.memory_pos is None
    for feat, mask in zip(enc.memory_maps(), enc.masks):
        assert mask[0].any() and (feat.permute(0, 2, 3, 1)[mask] == 0).all()
        assert (feat.permute(0, 2, 3, 1)[~mask].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("cls", [DEQDet, RNNDet, AdaMixer])
def test_batched_inference_equals_single_image(cls):
    model = randomise(tiny_adamixer(cls)).double().eval()
    sizes = [(128, 96), (64, 128), (96, 32)]
    inputs = [make_input(h, w, seed=5 + i) for i, (h, w) in enumerate(sizes)]
    model.pixel_mean, model.pixel_std = model.pixel_mean.double(), model.pixel_std.double()
    model.decoder.loop.inference_steps = 4 if cls is not AdaMixer else None
    with torch.no_grad():
        batched = model(inputs)
        singles = [model([x])[0] for x in inputs]
    for b, s in zip(batched, singles):
        b, s = b["instances"], s["instances"]
        torch.testing.assert_close(b.scores, s.scores)
        torch.testing.assert_close(b.pred_boxes.tensor, s.pred_boxes.tensor)
        assert torch.equal(b.pred_classes, s.pred_classes)
    assert len(batched[0]["instances"]) == Q


def test_inference_with_a_changed_number_of_steps():
    """DEQDet inference: g then f ``inference_steps`` times, against the refiner's step run by
    hand; 21 by default (20 + 1)."""
    model = randomise(tiny_adamixer(DEQDet)).eval()
    assert model.decoder.loop.inference_steps == 21
    with torch.no_grad():
        enc = model.encode(model.preprocess_image(BATCH))
        group, _ = model.matching_queries(enc)
        (step, state), preds = model.decoder.stepper([group], enc), []
        for k in range(6):
            state, pred = step(min(k, 1), state)
            preds.append(pred)
        for steps in (0, 2, 5):
            model.decoder.loop.inference_steps = steps
            out = model.forward_queries(enc)
            torch.testing.assert_close(out["pred_boxes"], preds[steps]["boxes"])
            torch.testing.assert_close(out["pred_logits"], preds[steps]["logits"])
            assert out["aux_outputs"] == []
    assert not torch.allclose(preds[2]["boxes"], preds[5]["boxes"])


def test_wrong_loops_and_strides_are_refused():
    with pytest.raises(ValueError, match="FixedPointRefinement loop over 2 layers"):
        tiny_adamixer(DEQDet, loop=UnrolledRefinement(2))
    with pytest.raises(ValueError, match="over 3"):
        tiny_adamixer(RNNDet, num_layers=3)
    model = tiny_adamixer(AdaMixer)
    with pytest.raises(ValueError, match="strides"):
        AdaMixer(backbone=model.backbone, neck=model.neck, queries=model.queries,
                 decoder=AdaMixerRefiner(adamixer_layers(1, embed_dim=D, num_heads=2, num_groups=2, in_points=4,
                                                         out_points=3, strides=(4, 8, 16)), K,
                                         SequentialRefinement(1)),
                 criterion=model.criterion)
    with pytest.raises(ValueError, match="num_classes=5"):
        AdaMixer(backbone=model.backbone, neck=model.neck, queries=model.queries, decoder=model.decoder,
                 criterion=model.criterion, num_classes=5)
    with pytest.raises(ValueError, match="no image_wh"):
        model.matching_queries(dataclasses.replace(model.encode(model.preprocess_image(BATCH)), image_wh=None))


def test_images_without_boxes_train():
    model = tiny_adamixer(DEQDet, loop=FixedPointRefinement(refinement_steps=3, supervision_positions=(1, 3))).train()
    for batch in ([BATCH[0], make_input(64, 96, seed=7)], [make_input(64, 64, seed=8), make_input(64, 96, seed=9)]):
        losses = model(batch)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
    assert losses["loss_bbox"] == 0 and losses["loss_class"] > 0


def _load_tool(name):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), *[os.pardir] * 3, "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("cls", [DEQDet, RNNDet])
def test_refinement_steps_tool_equals_inference_at_every_step_count(cls):
    """``tools/refinement_steps_ap.py`` computes all step counts in one pass: each equals the
    model's own inference with ``inference_steps=k``; its residuals are the state differences."""
    tool = _load_tool("refinement_steps_ap")
    model = randomise(tiny_adamixer(cls)).eval()
    with torch.no_grad():
        detections, residuals, n = tool.trajectory(model, BATCH, 4)
        assert len(detections) == 5 and residuals.shape == (4, 3) and n == len(BATCH) * Q
        for k in (0, 1, 4):
            model.decoder.loop.inference_steps = k
            for got, want in zip(detections[k], model(BATCH)):
                torch.testing.assert_close(got["instances"].pred_boxes.tensor, want["instances"].pred_boxes.tensor)
                torch.testing.assert_close(got["instances"].scores, want["instances"].scores)
        enc = model.encode(model.preprocess_image(BATCH))
        group, _ = model.matching_queries(enc)
        step, state = model.decoder.stepper([group], enc)
        z0, _ = step(0, state)
        z1, _ = step(1, z0)
    rel = ((z1.content - z0.content).norm(dim=-1) / z0.content.norm(dim=-1)).sum()
    centre = (z1.reference[..., :2] - z0.reference[..., :2]).norm(dim=-1).sum()
    scale = (z1.reference[..., 2:] - z0.reference[..., 2:]).abs().sum()
    torch.testing.assert_close(residuals[0], torch.stack([rel, centre, scale]))


def test_refinement_steps_tool_accepts_only_weight_tied_refiners():
    """The tool's guard passes DEQDet and RNNDet and names the config for AdaMixer (6 distinct
    stages in a sequential loop), instead of silently sweeping its first two layers."""
    tool = _load_tool("refinement_steps_ap")
    for cls in (DEQDet, RNNDet):
        tool.check_weight_tied(tiny_adamixer(cls), "cfg.py")
    with pytest.raises(SystemExit, match=r"cfg\.py: expected a weight-tied refiner .*AdaMixer.*SequentialRefinement"):
        tool.check_weight_tied(tiny_adamixer(AdaMixer), "cfg.py")
