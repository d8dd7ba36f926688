"""Multi-process training that fails loudly instead of hanging (issue 19).

DDP (``find_unused_parameters=False``, the default) reduces every trainable parameter's gradient
in every iteration; a process whose graph skipped a parameter (a module that runs only when its
batch has targets, say) never sends that gradient and the others wait for it forever. Likewise any
collective that not every process reaches. Two guards, both in ``DistributedGuard``:

* after each backward pass, a process checks that every trainable parameter received a gradient
  and otherwise raises ``UnusedParametersError`` naming them, the rank and the iteration (it is
  the process that would leave the others waiting; its exit stops the run);
* a watchdog thread: a training iteration (``run_step``: data, forward, backward, the metrics
  gather) still unfinished after ``train.ddp_timeout`` seconds logs an error naming the rank and
  the iteration, dumps the Python stacks of the process and exits it with status 1
  (``os._exit``: the main thread is blocked in C++ and cannot raise). It does not depend on the
  backend (tested on gloo; NCCL's own timeout would abort without naming the iteration).

The process group's own timeout (``launch(timeout=collective_timeout(train_cfg))``) bounds the
collectives outside training iterations (evaluation, barriers): ``ddp_timeout`` plus a margin, so
that inside an iteration the watchdog, which names the iteration, fires first.
"""
from __future__ import annotations

import datetime
import faulthandler
import logging
import os
import sys
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple, Union

from detectron2.engine import HookBase
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DEFAULT_DDP_TIMEOUT_S",
    "COLLECTIVE_TIMEOUT_MARGIN_S",
    "DistributedGuard",
    "StepWatchdog",
    "UnusedParametersError",
    "check_parameters_received_gradients",
    "trainable_parameters",
    "collective_timeout",
    "ddp_timeout_seconds",
]

logger = logging.getLogger(__name__)

DEFAULT_DDP_TIMEOUT_S = 600.0
COLLECTIVE_TIMEOUT_MARGIN_S = 60.0
_MAX_NAMED = 8  # parameter names listed in an error


class UnusedParametersError(RuntimeError):
    """Trainable parameters got no gradient in a multi-process iteration (DDP would hang)."""


def ddp_timeout_seconds(train_cfg) -> float:
    """``train.ddp_timeout`` (seconds, default ``DEFAULT_DDP_TIMEOUT_S``), checked: a positive number."""
    value = train_cfg.get("ddp_timeout", DEFAULT_DDP_TIMEOUT_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"train.ddp_timeout={value!r}; expected a positive number of seconds (default "
                         f"{DEFAULT_DDP_TIMEOUT_S:g})")
    return float(value)


def collective_timeout(train_cfg) -> datetime.timedelta:
    """The process group's timeout for ``launch``: ``train.ddp_timeout`` + ``COLLECTIVE_TIMEOUT_MARGIN_S``."""
    return datetime.timedelta(seconds=ddp_timeout_seconds(train_cfg) + COLLECTIVE_TIMEOUT_MARGIN_S)


def trainable_parameters(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """(name, parameter) of ``model``'s parameters that require a gradient (those DDP reduces)."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def check_parameters_received_gradients(model: Union[nn.Module, Sequence[Tuple[str, nn.Parameter]]], rank: int,
                                        iteration: int) -> None:
    """Raise ``UnusedParametersError`` if a trainable parameter of ``model`` (or of the list of
    ``trainable_parameters``) has no gradient after the backward pass (gradients set to None
    before it, as ``zero_grad(set_to_none=True)`` does)."""
    params = trainable_parameters(model) if isinstance(model, nn.Module) else model
    missing = [name for name, p in params if p.grad is None]
    if not missing:
        return
    names = ", ".join(n[len("module."):] if n.startswith("module.") else n for n in missing[:_MAX_NAMED])
    more = f" and {len(missing) - _MAX_NAMED} more" if len(missing) > _MAX_NAMED else ""
    raise UnusedParametersError(
        f"rank {rank}, iteration {iteration}: {len(missing)} trainable parameters got no gradient ({names}{more}). "
        "DDP with train.ddp.find_unused_parameters=False reduces every parameter in every iteration: the other "
        "processes would wait for these forever. Every trainable parameter must take part in the loss on every "
        "batch, also one without targets (a module that runs only when the batch has boxes, say); or set "
        "train.ddp.find_unused_parameters=True (slower)."
    )


def _flush_logs() -> None:
    for log in [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]:
        for handler in getattr(log, "handlers", []):
            try:
                handler.flush()
            except Exception:  # noqa: BLE001  (best effort before os._exit)
                pass
    sys.stdout.flush()
    sys.stderr.flush()


def _exit_on_timeout(message: str) -> None:
    """Log ``message``, write it and every thread's stack to stderr, exit the process with status 1."""
    logger.error(message)
    sys.stderr.write(f"\n{message}\nPython stacks of this process:\n")
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    _flush_logs()
    os._exit(1)


class StepWatchdog:
    """A daemon thread that calls ``on_timeout(message)`` when an armed step is still running
    ``timeout_s`` seconds after ``arm(iteration)`` (``disarm`` when the step is done). The
    default ``on_timeout`` logs, dumps the stacks and exits the process with status 1."""

    def __init__(self, timeout_s: float, rank: int, on_timeout: Optional[Callable[[str], None]] = None):
        self.timeout_s = float(timeout_s)
        self.rank = rank
        self.on_timeout = on_timeout or _exit_on_timeout
        self._cond = threading.Condition()
        self._deadline: Optional[float] = None
        self._iteration: Optional[int] = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="codetr-step-watchdog", daemon=True)
        self._thread.start()

    def arm(self, iteration: int) -> None:
        with self._cond:
            self._deadline = time.monotonic() + self.timeout_s
            self._iteration = iteration
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def message(self, iteration: int) -> str:
        return (
            f"rank {self.rank}: training iteration {iteration} has not finished after {self.timeout_s:g} s "
            f"(train.ddp_timeout={self.timeout_s:g}): this process is waiting, most likely for the other processes "
            "in a collective (gradient all-reduce, loss normaliser, metrics) that not every process reached "
            "(a rank whose graph skipped a parameter or that issued a collective conditionally, or a rank that "
            "died or is stuck); stopping the run. Raise train.ddp_timeout if an iteration legitimately takes longer."
        )

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                iteration, self._deadline = self._iteration, None
                self.on_timeout(self.message(iteration))


class DistributedGuard(HookBase):
    """The trainer hook of both guards (see the module docstring); does nothing in a
    single-process run. Register it first, so that its ``after_step`` (the end of the watched
    step) runs before the other hooks' (evaluation, checkpoints: not part of the step).

    Args:
        timeout_s: ``train.ddp_timeout``.
        world_size, rank: of this process (``comm.get_world_size()``, ``comm.get_rank()``).
        check_gradients: run the gradient check; default: when the trainer's model is a DDP
            model without ``find_unused_parameters``.
    """

    def __init__(self, timeout_s: float, world_size: int, rank: int, check_gradients: Optional[bool] = None):
        self.timeout_s = timeout_s
        self.enabled = world_size > 1
        self.rank = rank
        self.check_gradients = check_gradients
        self.watchdog: Optional[StepWatchdog] = None
        self._params: List[Tuple[str, nn.Parameter]] = []

    def before_train(self):
        if not self.enabled:
            return
        if self.check_gradients is None:
            model = self.trainer.model
            self.check_gradients = isinstance(model, DistributedDataParallel) and not model.find_unused_parameters
        if self.check_gradients:  # DDP, too, fixes the set of parameters it reduces when it wraps the model
            self._params = trainable_parameters(self.trainer.model)
        self.watchdog = StepWatchdog(self.timeout_s, self.rank)

    def before_step(self):
        if self.watchdog is not None:
            self.watchdog.arm(self.trainer.iter)

    def after_backward(self):
        if self.enabled and self.check_gradients:
            check_parameters_received_gradients(self._params, self.rank, self.trainer.iter)

    def after_step(self):
        if self.watchdog is not None:
            self.watchdog.disarm()

    def after_train(self):
        # After an exception the step stays armed: a process that then hangs (in the teardown, in
        # the final barrier) is still stopped. A finished run stops the thread.
        if self.watchdog is not None and self.trainer.iter >= self.trainer.max_iter:
            self.watchdog.stop()
            self.watchdog = None
