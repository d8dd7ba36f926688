"""The training step: Detectron2's ``SimpleTrainer`` with device-agnostic mixed precision and
gradient clipping.

Detectron2's ``AMPTrainer`` (and detrex's trainer) assert that CUDA is available and only know
``torch.cuda.amp``; this one uses ``torch.autocast(device_type, dtype)`` so fp16 and bf16 work on
CUDA and on the CPU. A ``torch.amp.GradScaler`` is used for fp16 only (bf16 has the fp32
exponent range and needs no loss scaling); its state is saved with the trainer's.

A non-finite loss stops the run before the optimizer step, with a ``FloatingPointError`` naming
the iteration and the first non-finite loss term (``check_finite_losses``; Detectron2 checks
only the sum, on the main process); a ``FloatingPointError`` raised inside the model (the
Hungarian matcher's non-finite cost check) gets the iteration added.
"""
from __future__ import annotations

import math
import time
from typing import Mapping, Optional

import torch
from torch import nn

from detectron2.engine import SimpleTrainer
from detectron2.utils.events import get_event_storage

__all__ = ["Trainer", "check_finite_losses", "parse_amp_dtype"]

_AMP_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_amp_dtype(name) -> torch.dtype:
    """``"float16"``/``"fp16"``/``"half"`` or ``"bfloat16"``/``"bf16"`` (or a torch.dtype)."""
    if isinstance(name, torch.dtype) and name in _AMP_DTYPES.values():
        return name
    try:
        return _AMP_DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"train.amp.dtype must be one of {sorted(_AMP_DTYPES)}, got {name!r}") from None


def check_finite_losses(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raise ``FloatingPointError`` naming the iteration, the first NaN / inf loss term (in the
    model's order) and how many there are. One device-to-host copy of all terms (stacked)."""
    names = list(loss_dict)
    if not names:
        return
    values = [loss_dict[k].detach() for k in names]
    try:
        stacked = torch.stack(values)
    except RuntimeError:  # terms of other shapes than () (e.g. (1,)): one scalar each
        stacked = torch.stack([v.float().reshape(()) for v in values])
    bad = [(k, x) for k, x in zip(names, stacked.float().tolist()) if not math.isfinite(x)]
    if bad:
        listed = ", ".join(k for k, _ in bad[:8]) + (" ..." if len(bad) > 8 else "")
        others = f" ({len(bad)} of the {len(names)} terms are: {listed})" if len(bad) > 1 else ""
        raise FloatingPointError(
            f"iteration {iteration}: loss {bad[0][0]!r} is {bad[0][1]}{others}; the run is stopped before the "
            "optimizer step. The training diverged (e.g. a too large optimizer.lr; gradient clipping: "
            "train.clip_grad.enabled=True) or the data hold non-finite values."
        )


class Trainer(SimpleTrainer):
    """One optimisation step per iteration: forward (optionally under autocast), backward
    (through a GradScaler for fp16), optional gradient-norm clipping, optimizer step.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``; ``model(batch)`` returns a dict
            of scalar losses (or one tensor).
        device_type: ``"cuda"`` or ``"cpu"`` (autocast / GradScaler device).
        amp_enabled: run the forward pass under ``torch.autocast``.
        amp_dtype: ``torch.float16`` (with loss scaling) or ``torch.bfloat16``.
        clip_grad_max_norm: clip the total gradient norm to this value; ``None`` disables.
        clip_grad_norm_type: the p of the p-norm used for clipping.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        *,
        device_type: str = "cuda",
        amp_enabled: bool = False,
        amp_dtype: torch.dtype = torch.float16,
        clip_grad_max_norm: Optional[float] = None,
        clip_grad_norm_type: float = 2.0,
    ):
        super().__init__(model, data_loader, optimizer)
        self.device_type = device_type
        self.amp_enabled = amp_enabled
        self.amp_dtype = amp_dtype
        self.clip_grad_max_norm = clip_grad_max_norm
        self.clip_grad_norm_type = clip_grad_norm_type
        self.grad_scaler = torch.amp.GradScaler(device_type, enabled=amp_enabled and amp_dtype == torch.float16)

    def run_step(self):
        assert self.model.training, "[Trainer] the model was switched to eval mode during training"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_enabled):
            try:
                loss_dict = self.model(data)
            except FloatingPointError as e:  # e.g. the matcher's non-finite cost
                raise FloatingPointError(f"iteration {self.iter}: {e}") from e
        if isinstance(loss_dict, torch.Tensor):
            loss_dict = {"total_loss": loss_dict}
        losses = sum(loss.float() for loss in loss_dict.values())

        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(losses).backward()
        self.after_backward()

        if self.clip_grad_max_norm is not None:
            self.grad_scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_max_norm, self.clip_grad_norm_type)
            get_event_storage().put_scalar("grad_norm", float(grad_norm), smoothing_hint=True)

        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def _write_metrics(self, loss_dict, data_time: float, prefix: str = "", iter: Optional[int] = None) -> None:
        """``check_finite_losses`` (every iteration, on every process), then Detectron2's metrics
        writer (which checks only the sum, on the main process, every ``gather_metric_period``)."""
        iter = self.iter if iter is None else iter
        check_finite_losses(loss_dict, iter)
        super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler.is_enabled():
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler.is_enabled() and state_dict.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
