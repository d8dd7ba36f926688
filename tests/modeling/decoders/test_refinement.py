"""AdaMixerRefiner with real AdaMixer layers: DEQDet / RNNDet / AdaMixer loops end to end."""
import dataclasses
import math

import pytest
import torch

from codetr.layers.adaptive_sampling import zero_padding
from codetr.modeling.coders import XYZRCoder
from codetr.modeling.decoders.adamixer import AdaMixerDecoderLayer
from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner, SequentialRefinement
from codetr.modeling.queries import QueryGroup

from adamixer_cases import make_enc

STRIDES = (4, 8)


def _layers(n, **kw):
    return [AdaMixerDecoderLayer(embed_dim=16, num_heads=2, ffn_dim=32, num_groups=2, in_points=4, out_points=3,
                                 strides=STRIDES, **kw) for _ in range(n)]


def _inputs(dtype=torch.float32):
    torch.manual_seed(0)
    sizes = [(32, 24), (20, 32)]  # (H, W)
    feats, masks = [], []
    for s in STRIDES:
        m = torch.ones(2, 32 // s, 32 // s, dtype=torch.bool)
        for i, (h, w) in enumerate(sizes):
            m[i, : math.ceil(h / s), : math.ceil(w / s)] = False
        feats.append(torch.randn(2, 16, 32 // s, 32 // s, dtype=dtype))
        masks.append(m)
    feats = zero_padding(feats, masks)
    image_wh = torch.tensor([[w, h] for h, w in sizes], dtype=dtype)
    whole = torch.tensor([0.5, 0.5, 1.0, 1.0], dtype=dtype).expand(2, 5, 4)
    xyzr = XYZRCoder(image_wh).from_boxes(whole)  # the official initial queries: whole images
    content = torch.nn.functional.layer_norm(torch.randn(2, 5, 16, dtype=dtype), (16,))
    return feats, masks, image_wh, content, xyzr, sizes


def _run(refiner, content, xyzr, enc, image_wh, **kw):
    """The decoder on one query group -> [(name, {"logits", "boxes"}), ...] per output."""
    enc = dataclasses.replace(enc, image_wh=image_wh)
    out = refiner([QueryGroup(content, xyzr)], enc, **kw)
    return [(n, {"logits": lg, "boxes": bx}) for n, lg, bx in zip(out.names, out.logits, out.boxes)]


def _loss(outputs):
    return sum(p["logits"].sigmoid().mean() + p["boxes"].abs().mean() for _, p in outputs)


def test_deqdet_training_step():
    feats, masks, image_wh, content, xyzr, _ = _inputs()
    refiner = AdaMixerRefiner(_layers(2), 3, FixedPointRefinement()).train()
    outputs = _run(refiner, content, xyzr, make_enc(feats, masks), image_wh)
    assert [n for n, _ in outputs] == ["init", "init^1", "init^2", "iter1", "iter3", "iter6", "iter9", "iter12",
                                      "iter20"]
    assert outputs[0][1]["logits"].shape == (2, 5, 3) and outputs[0][1]["boxes"].shape == (2, 5, 4)
    # the box heads start at zero: g's first prediction is the initial (whole-image) box
    torch.testing.assert_close(outputs[0][1]["boxes"], torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(2, 5, 4))
    _loss(outputs).backward()
    for name, p in refiner.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_inference_steps_and_batched_equals_single_image():
    feats, masks, image_wh, content, xyzr, sizes = _inputs(torch.float64)
    refiner = AdaMixerRefiner(_layers(2), 3, FixedPointRefinement()).double().eval()
    with torch.no_grad():
        for layer in refiner.layers:  # non-trivial sampling and mixing
            layer.sampling.offsets.weight.normal_(std=0.05)
            layer.mixing.parameter_generator.weight.normal_(std=0.05)
        for head in refiner.box_heads:
            head.fc.weight.normal_(std=0.01)
        batched = _run(refiner, content, xyzr, make_enc(feats, masks), image_wh, num_steps=4)
        assert len(batched) == 1 and batched[0][0] == "step4"
        for i, (h, w) in enumerate(sizes):
            lone = [f[i:i + 1, :, : math.ceil(h / s), : math.ceil(w / s)] for f, s in zip(feats, STRIDES)]
            alone = _run(refiner, content[i:i + 1], xyzr[i:i + 1], make_enc(lone), image_wh[i:i + 1], num_steps=4)
            for key in ("logits", "boxes"):
                torch.testing.assert_close(batched[0][1][key][i:i + 1], alone[0][1][key])
        fewer = _run(refiner, content, xyzr, make_enc(feats, masks), image_wh, num_steps=1)
        assert not torch.allclose(fewer[0][1]["boxes"], batched[0][1]["boxes"])


def test_rnndet_and_adamixer_loops():
    feats, masks, image_wh, content, xyzr, _ = _inputs()
    enc = make_enc(feats, masks)
    rnn = AdaMixerRefiner(_layers(2), 3, UnrolledRefinement(3)).train()
    out = _run(rnn, content, xyzr, enc, image_wh)
    assert [n for n, _ in out] == ["init", "step1", "step2", "step3"]
    _loss(out[-1:]).backward()  # the last step alone reaches g through the unrolled f steps
    assert rnn.layers[0].norm3.weight.grad is not None
    stack = AdaMixerRefiner(_layers(3), 3, SequentialRefinement(3)).train()
    out = _run(stack, content, xyzr, enc, image_wh)
    assert [n for n, _ in out] == ["layer0", "layer1", "layer2"]
    _loss(out).backward()
    assert all(p.grad is not None for p in stack.parameters())


def test_training_step_finite_under_cpu_autocast():
    feats, masks, image_wh, content, xyzr, _ = _inputs()
    refiner = AdaMixerRefiner(_layers(2), 3, FixedPointRefinement(refinement_steps=3, supervision_positions=(1, 3)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = _run(refiner.train(), content, xyzr, make_enc(feats, masks), image_wh)
        loss = _loss(outputs)
    loss.float().backward()
    assert torch.isfinite(loss)
    for name, p in refiner.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
