"""DEQDet's fixed-point loop and RNNDet's unrolled loop, counted with hooks on stub layers."""
import pytest
import torch
from torch import nn

from codetr.modeling.coders import xyxy_to_xyzr, xyzr_to_xyxy
from codetr.modeling.decoders.fixed_point import (
    FixedPointRefinement,
    QueryState,
    UnrolledRefinement,
    perturb_state,
)
from codetr.modeling.decoders.refinement import SequentialRefinement


class StubLayer(nn.Module):
    """content -> tanh(W content); box delta from the new content."""

    def __init__(self, dim=6):
        super().__init__()
        self.mix = nn.Linear(dim, dim)
        self.box = nn.Linear(dim, 4)

    def forward(self, content):
        return torch.tanh(self.mix(content))


class Recorder:
    """Runs g (index 0) / f (index 1) and records every application: layer index, whether
    gradient mode was on, the input state, and (filled during backward) whether its output
    received a gradient."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.g, self.f = StubLayer(), StubLayer()
        self.calls = []
        self.reached = set()

    def step(self, i, state):
        layer = self.g if i == 0 else self.f
        k = len(self.calls)
        self.calls.append((i, torch.is_grad_enabled(), state.content.detach().clone(), state.reference.detach().clone()))
        content = layer(state.content)
        if content.requires_grad:
            content.register_hook(lambda grad, k=k: self.reached.add(k))
        xyzr = state.reference.detach() + 0.01 * layer.box(content)  # positions detached at the input, as AdaMixer
        return QueryState(content, xyzr), content.sum(-1) + xyzr.sum(-1)


def _state():
    g = torch.Generator().manual_seed(1)
    return QueryState(torch.randn(2, 3, 6, generator=g), torch.cat([torch.rand(2, 3, 2, generator=g) * 50,
                                                                     torch.full((2, 3, 1), 4.0),
                                                                     torch.zeros(2, 3, 1)], -1))


def test_training_schedule_and_gradient_paths():
    rec = Recorder()
    loop = FixedPointRefinement(perturb_content_prob=0.0, perturb_position_prob=0.0).train()
    outputs = loop(rec.step, _state())
    names = [n for n, _ in outputs]
    assert names == ["init", "init^1", "init^2", "iter1", "iter3", "iter6", "iter9", "iter12", "iter20"]
    # g once with gradient; f: 2 (init) + 20 without gradient + 6 x 2 with gradient
    assert [c[:2] for c in rec.calls if c[0] == 0] == [(0, True)]
    f_calls = [c[1] for c in rec.calls if c[0] == 1]
    assert f_calls.count(False) == 20 and f_calls.count(True) == 2 + 12
    # layout: after no-grad step i in the supervision positions come exactly two grad steps
    layout = "".join("G" if c[0] == 0 else ("f" if c[1] else ".") for c in rec.calls)
    expected = "Gff" + "".join("." + ("ff" if i in (1, 3, 6, 9, 12, 20) else "") for i in range(1, 21))
    assert layout == expected

    # backward of each iter loss alone reaches exactly its two f applications, nothing else (not g)
    grad_calls = [k for k, c in enumerate(rec.calls) if c[1]]
    for j, (name, pred) in enumerate(outputs[3:]):
        rec.reached.clear()
        for p in [*rec.g.parameters(), *rec.f.parameters()]:
            p.grad = None
        pred.sum().backward(retain_graph=True)
        assert rec.reached == set(grad_calls[3 + 2 * j: 5 + 2 * j]), name
        assert all(p.grad is None for p in rec.g.parameters())
        # the same gradient as two f steps from the detached state the no-grad loop reached
        start = rec.calls[grad_calls[3 + 2 * j]]
        f = rec.f
        c = f(f(start[2]))
        with torch.no_grad():  # positions are detached at every step's input
            x = start[3] + 0.01 * f.box(f(start[2]))
        x = x + 0.01 * f.box(c)
        expected = torch.autograd.grad((c.sum(-1) + x.sum(-1)).sum(), list(f.parameters()))
        for p, e in zip(f.parameters(), expected):
            torch.testing.assert_close(p.grad, e)
    # the init losses train g
    rec.reached.clear()
    outputs[2][1].sum().backward()
    assert rec.reached == {0, 1, 2}


def test_perturbation_formula():
    state = _state()
    torch.manual_seed(5)
    out = perturb_state(state, 1.0, 1.0, 0.1, 25.0)
    torch.manual_seed(5)
    torch.rand(1)
    eps = torch.randn_like(state.content)
    torch.rand(1)
    box_noise = torch.randn_like(state.reference)
    norm = state.content.pow(2).sum(-1, keepdim=True).sqrt()
    torch.testing.assert_close(out.content, 0.9 * state.content + norm * eps * 0.1)
    torch.testing.assert_close(out.reference, xyxy_to_xyzr(xyzr_to_xyxy(state.reference) + 25 * box_noise))
    unchanged = perturb_state(state, 0.0, 0.0)
    assert torch.equal(unchanged.content, state.content) and torch.equal(unchanged.reference, state.reference)


def test_perturbation_only_in_training():
    rec = Recorder()
    loop = FixedPointRefinement(refinement_steps=3, supervision_positions=(3,), perturb_content_prob=1.0,
                                perturb_position_prob=1.0)
    loop.train()(rec.step, _state())
    # the first no-grad f step reads a perturbed copy of g's output
    g_out, _ = Recorder(0).step(0, _state())
    first_nograd = next(c for c in rec.calls if not c[1])
    assert not torch.allclose(first_nograd[2], g_out.content)
    rec2 = Recorder()
    with torch.no_grad():
        out = loop.eval()(rec2.step, _state())
    assert len(out) == 1 and out[0][0] == "step4"
    torch.testing.assert_close(rec2.calls[1][2], g_out.content.detach())  # eval: no noise
    # every eval step reads exactly the previous output
    ref = Recorder()
    s, _ = ref.step(0, _state())
    for k in range(1, 5):
        torch.testing.assert_close(rec2.calls[k][2], s.content.detach())
        s, _ = ref.step(1, s)


def test_inference_steps_configurable():
    loop = FixedPointRefinement(refinement_steps=20).eval()
    rec = Recorder()
    loop(rec.step, _state())
    assert [c[0] for c in rec.calls] == [0] + [1] * 21
    rec = Recorder()
    out = loop(rec.step, _state(), num_steps=5)
    assert [c[0] for c in rec.calls] == [0] + [1] * 5 and out[0][0] == "step5"
    traj = loop.infer(Recorder().step, _state(), num_steps=3, trajectory=True)
    assert [n for n, _ in traj] == ["step0", "step1", "step2", "step3"]


def test_unrolled_backpropagates_through_every_step():
    rec = Recorder()
    loop = UnrolledRefinement(num_steps=4).train()
    outputs = loop(rec.step, _state())
    assert [n for n, _ in outputs] == ["init", "step1", "step2", "step3", "step4"]
    assert all(c[1] for c in rec.calls) and [c[0] for c in rec.calls] == [0, 1, 1, 1, 1]
    outputs[-1][1].sum().backward()
    assert rec.reached == {0, 1, 2, 3, 4}  # the last step's loss reaches g through every f
    assert all(p.grad is not None for p in rec.g.mix.parameters())  # (g.box: positions are detached)
    rec = Recorder()
    out = loop.eval()(rec.step, _state(), num_steps=7)
    assert len(rec.calls) == 8 and out[0][0] == "step7"
    assert [n for n, _ in UnrolledRefinement(4, supervision_positions=(2, 4)).train()(Recorder().step, _state())] == \
        ["init", "step2", "step4"]


def test_errors():
    with pytest.raises(ValueError, match="supervision_positions"):
        FixedPointRefinement(refinement_steps=10)
    with pytest.raises(ValueError, match="supervision_positions"):
        UnrolledRefinement(3, supervision_positions=(0, 2))


@pytest.mark.parametrize("build, name, value", [
    (lambda v: UnrolledRefinement(5, inference_steps=v), "inference_steps", -3),  # ran g alone before
    (lambda v: UnrolledRefinement(v), "num_steps", 0),
    (lambda v: UnrolledRefinement(v), "num_steps", 2.5),
    (lambda v: FixedPointRefinement(inference_steps=v), "inference_steps", -1),  # refused at inference only
    (lambda v: FixedPointRefinement(refinement_steps=20, grad_steps=v), "grad_steps", 0),
    (lambda v: FixedPointRefinement(refinement_steps=20, init_supervisions=v), "init_supervisions", -1),
    (lambda v: FixedPointRefinement(refinement_steps=20, inference_steps=v), "inference_steps", True),
    (lambda v: FixedPointRefinement(refinement_steps=v, supervision_positions=(1,)), "refinement_steps", "3"),
    (lambda v: SequentialRefinement(v), "num_layers", -6),
])
def test_step_counts_checked_at_construction(build, name, value):
    """Every step count of every loop is an integer in range, checked when the loop is built
    (before: a negative inference_steps ran g alone and DEQDet's failed only at the first
    evaluation)."""
    with pytest.raises(ValueError, match=rf"{name}={value!r}; expected an integer >= "):
        build(value)


def test_step_counts_zero_and_per_call():
    """0 inference steps (g alone) is allowed; a negative per-call count is refused as well."""
    for loop, first in ((UnrolledRefinement(3, inference_steps=0), "init"),
                        (FixedPointRefinement(inference_steps=0), "step0")):
        rec = Recorder()
        out = loop.eval()(rec.step, _state())
        assert [c[0] for c in rec.calls] == [0] and out[0][0] == first
        with pytest.raises(ValueError, match="num_steps=-2; expected an integer >= 0"):
            loop(Recorder().step, _state(), num_steps=-2)


def test_rnndet_config_refuses_negative_inference_steps():
    import os

    from detectron2.config import LazyConfig, instantiate

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    cfg = LazyConfig.load(os.path.join(root, "configs", "deqdet", "rnndet_r50_1x.py"))
    cfg = LazyConfig.apply_overrides(cfg, ["model.decoder.loop.inference_steps=-3"])
    with pytest.raises(ValueError, match="UnrolledRefinement: inference_steps=-3"):
        instantiate(cfg.model.decoder.loop)
