"""The training step (autocast, GradScaler, gradient clipping) and the weight EMA, on toy
modules whose gradients and averages are computed by hand."""
import itertools
import math

import pytest
import torch
from torch import nn

from detectron2.utils.events import EventStorage

from codetr.engine import EMAHook, Trainer, build_model_ema, ema_has_weights, parse_amp_dtype


class LinearLoss(nn.Module):
    """loss = p . c, so d loss / d p = c, whatever the input."""

    def __init__(self, c):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(len(c)))
        self.register_buffer("c", torch.tensor(c))
        self.lin = nn.Linear(4, 4)
        self.seen_dtype = None

    def forward(self, batch):
        out = self.lin(batch)
        self.seen_dtype = out.dtype
        return {"loss_lin": (self.p * self.c).sum(), "loss_zero": out.float().sum() * 0.0}


def one_step(model, optimizer, **kwargs):
    trainer = Trainer(model, itertools.repeat(torch.ones(2, 4)), optimizer, device_type="cpu", **kwargs)
    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()
    return trainer, storage


def test_gradient_clipping_scales_the_total_norm():
    model = LinearLoss([30.0, 40.0])  # gradient norm 50
    opt = torch.optim.SGD([model.p], lr=1.0)
    _, storage = one_step(model, opt, clip_grad_max_norm=5.0)
    assert model.p.detach().tolist() == pytest.approx([-3.0, -4.0], rel=1e-5)  # -(5/50) * c
    assert storage.history("grad_norm").latest() == pytest.approx(50.0)


def test_no_clipping_by_default():
    model = LinearLoss([30.0, 40.0])
    one_step(model, torch.optim.SGD([model.p], lr=1.0))
    assert model.p.detach().tolist() == pytest.approx([-30.0, -40.0])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_on_cpu(dtype):
    model = LinearLoss([1.0, 2.0])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer, _ = one_step(model, opt, amp_enabled=True, amp_dtype=parse_amp_dtype(dtype), clip_grad_max_norm=100.0)
    assert model.seen_dtype == getattr(torch, dtype)
    # loss scaling (fp16 only) must not change the update: grads are unscaled before the step
    assert model.p.detach().tolist() == pytest.approx([-1.0, -2.0])
    assert trainer.grad_scaler.is_enabled() == (dtype == "float16")
    assert ("grad_scaler" in trainer.state_dict()) == (dtype == "float16")


def test_fp32_without_amp():
    model = LinearLoss([1.0, 2.0])
    one_step(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert model.seen_dtype == torch.float32


def test_parse_amp_dtype():
    assert parse_amp_dtype("bf16") is torch.bfloat16
    assert parse_amp_dtype("float16") is torch.float16
    with pytest.raises(ValueError, match="train.amp.dtype"):
        parse_amp_dtype("int8")


def test_ema_hand_computed():
    model = nn.Linear(1, 1, bias=False)
    ema = build_model_ema(model, decay=0.5)
    hook = EMAHook(ema, model)
    assert not ema_has_weights(ema)
    with torch.no_grad():
        model.weight.fill_(2.0)
    hook.after_step()  # first update copies the weights
    assert ema.module.weight.item() == pytest.approx(2.0)
    with torch.no_grad():
        model.weight.fill_(4.0)
    hook.after_step()  # 0.5 * 2 + 0.5 * 4
    assert ema.module.weight.item() == pytest.approx(3.0)
    assert ema_has_weights(ema) and int(ema.n_averaged) == 2
    assert not ema.module.weight.requires_grad


def test_ema_decay_is_validated():
    with pytest.raises(ValueError, match="decay"):
        build_model_ema(nn.Linear(1, 1), decay=1.0)


class DivergesAt(nn.Module):
    """loss_a = p . 1 always; from call ``at`` on, loss_b is NaN and loss_c inf."""

    def __init__(self, at):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(2))
        self.at, self.calls = at, 0

    def forward(self, batch):
        bad = self.calls >= self.at
        self.calls += 1
        scale = torch.tensor(float("nan") if bad else 1.0)
        loss_c = self.p.sum() + (math.inf if bad else 0)
        return {"loss_a": self.p.sum(), "loss_b": self.p.sum() * scale, "loss_c": loss_c}


def test_non_finite_loss_stops_before_the_step_naming_iteration_and_term():
    model = DivergesAt(at=2)
    opt = torch.optim.SGD([model.p], lr=1.0)
    trainer = Trainer(model, itertools.repeat(torch.ones(2, 4)), opt, device_type="cpu")
    with EventStorage(0) as storage:
        for it in range(2):
            trainer.iter = storage.iter = it
            trainer.run_step()
        after_two = model.p.detach().clone()
        assert after_two.tolist() == [-6.0, -6.0]  # 2 steps of -(1 + 1 + 1)
        trainer.iter = storage.iter = 2
        with pytest.raises(FloatingPointError, match=r"^iteration 2: loss 'loss_b' is nan \(2 of the 3 terms are: "
                           r"loss_b, loss_c\); the run is stopped before the optimizer step"):
            trainer.run_step()
    assert torch.equal(model.p.detach(), after_two)  # the non-finite step was not applied


def test_matcher_non_finite_cost_names_the_iteration():
    """The Hungarian matcher inside the model sees NaN predictions: the error names the
    iteration (scipy's "matrix contains invalid numeric entries" before)."""
    from codetr.modeling.matcher import HungarianMatcher

    class NanPredictions(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.full((3, 4), float("nan")))

        def forward(self, batch):
            target = {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
            HungarianMatcher()(self.p[None], self.p.sigmoid()[None], [target])
            return {"loss": self.p.sum()}

    model = NanPredictions()
    trainer = Trainer(model, itertools.repeat(torch.ones(1)), torch.optim.SGD(model.parameters(), lr=1.0),
                      device_type="cpu")
    with EventStorage(7):
        trainer.iter = 7
        with pytest.raises(FloatingPointError, match=r"^iteration 7: HungarianMatcher: the matching cost "
                           r"\(3 queries x 1 targets\) has 3 non-finite"):
            trainer.run_step()
