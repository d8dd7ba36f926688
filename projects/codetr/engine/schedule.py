"""Schedules in epochs, stretched to the run's length.

Configs state the run's length in epochs (``train.epochs``), and each schedule states its events
in epochs of the schedule it was written for (E epochs, e.g. the papers' 12): LR milestones
(``lr_multiplier.milestones`` of ``lr_multiplier.epochs``), TOOD's ATSS -> TAL switch
(``model.head.initial_epochs`` of ``model.head.epochs``). Detectron2's trainer counts
iterations. One epoch is

    iters_per_epoch = ceil(num_images / dataloader.train.total_batch_size)

where ``num_images`` is the length of the training dataset *after* Detectron2's filtering (the
list that ``dataloader.train.dataset`` instantiates to). :func:`resolve_schedule` fills
``train.iters_per_epoch`` and ``train.max_iter`` (= train.epochs * iters_per_epoch) when they are ``None``;
a value given in the config or on the command line (``train.max_iter=300``) wins.

Every event is a fraction of the schedule, whatever the run's length: epoch e of an E-epoch
schedule happens at iteration ``round(e / E * max_iter)`` (:func:`schedule_iteration`). When the
run is as long as the schedule (``train.epochs`` = E, ``max_iter`` derived from the dataset) this
is ``e * iters_per_epoch``; ``train.epochs=2E`` or ``train.max_iter=N`` stretch or compress the
whole schedule (12-epoch Co-DINO, milestone 11, ``train.max_iter=300``: the LR drops at iteration
275; ``train.epochs=24``: after epoch 22).

Warm-up (``warmup_iters``) is given in iterations of the schedule at its nominal length
(E * iters_per_epoch: mmdet's 500 iterations of the COCO 1x schedule) and scales with the run
like the milestones: ``round(warmup_iters * max_iter / (E * iters_per_epoch))``, capped at
``warmup_max_fraction`` of the run (default 0.1), so that a schedule whose nominal length is
shorter than its warm-up (a small dataset) does not train at a reduced LR throughout; the cap is
logged with a warning when it applies.

For reference: detrex counts a COCO "epoch" as a fixed 7500 iterations at batch 16 (12 ep = 90k);
COCO train2017 with empty images removed has 117266 images, i.e. 7330 iterations per epoch here.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

from fvcore.common.param_scheduler import MultiStepParamScheduler, ParamScheduler

from detectron2.solver import WarmupParamScheduler

__all__ = ["iters_per_epoch", "resolve_schedule", "schedule_iteration", "warmup_length", "multistep_lr_schedule"]

logger = logging.getLogger(__name__)


def iters_per_epoch(num_images: int, total_batch_size: int) -> int:
    """Iterations needed to see ``num_images`` images once at ``total_batch_size`` images per
    iteration (summed over all workers), rounded up."""
    if num_images <= 0:
        raise ValueError(f"iters_per_epoch: the training dataset is empty (num_images={num_images})")
    if total_batch_size <= 0:
        raise ValueError(f"iters_per_epoch: total_batch_size must be positive, got {total_batch_size}")
    return math.ceil(num_images / total_batch_size)


def _check_epochs(epochs, who: str) -> float:
    if epochs is None or isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
        raise ValueError(f"{who}: the schedule's length in epochs must be a positive number, got {epochs!r}")
    return epochs


def schedule_iteration(epoch: float, epochs: float, max_iter: int, what: str = "epoch") -> int:
    """The iteration at which epoch ``epoch`` of an ``epochs``-epoch schedule happens in a run of
    ``max_iter`` iterations: ``round(epoch / epochs * max_iter)``.

    ``what`` names the value in errors (e.g. "LR milestone"). ``epoch`` must lie in [0, epochs].
    """
    _check_epochs(epochs, f"schedule_iteration ({what})")
    if max_iter is None or max_iter <= 0:
        raise ValueError(
            f"schedule_iteration ({what}): max_iter must be resolved to a positive number first, got {max_iter!r} "
            "(train_net.py calls codetr.engine.resolve_schedule before building the model and the LR scheduler)"
        )
    if not 0 <= epoch <= epochs:
        raise ValueError(
            f"{what} {epoch} (epochs) lies outside the {epochs}-epoch schedule it belongs to; "
            f"the schedule's events must lie in [0, {epochs}]"
        )
    return int(round(epoch / epochs * max_iter))


def warmup_length(
    warmup_iters: int, max_iter: int, epochs: float, iters_per_epoch: int, max_fraction: float = 0.1
) -> int:
    """Warm-up iterations of a run: ``warmup_iters`` (iterations of the schedule at its nominal
    length ``epochs * iters_per_epoch``) scaled by ``max_iter / (epochs * iters_per_epoch)`` and
    capped at ``round(max_fraction * max_iter)`` (a warning says so when the cap applies)."""
    if warmup_iters < 0:
        raise ValueError(f"warmup_length: warmup_iters must be >= 0, got {warmup_iters}")
    if not 0 < max_fraction <= 1:
        raise ValueError(f"warmup_length: max_fraction must be in (0, 1], got {max_fraction}")
    if warmup_iters == 0:
        return 0
    _check_epochs(epochs, "warmup_length")
    if iters_per_epoch is None or iters_per_epoch <= 0:
        raise ValueError(
            f"warmup_length: iters_per_epoch must be resolved to a positive number, got {iters_per_epoch!r}"
        )
    nominal = epochs * iters_per_epoch
    scaled = int(round(warmup_iters * max_iter / nominal))
    cap = int(round(max_fraction * max_iter))
    if scaled > cap:
        logger.warning(
            "Warm-up: %d iterations of the %g-iteration nominal schedule scale to %d of max_iter=%d; capped at "
            "%d (warmup_max_fraction=%g)",
            warmup_iters, nominal, scaled, max_iter, cap, max_fraction,
        )
        return cap
    return scaled


def resolve_schedule(train_cfg, num_images: Optional[int], total_batch_size: int) -> None:
    """Fill ``train_cfg.iters_per_epoch`` and ``train_cfg.max_iter`` in place.

    Args:
        train_cfg: the ``train`` node of a LazyConfig; reads ``epochs``, ``max_iter``,
            ``iters_per_epoch`` (the last two may be ``None``).
        num_images: length of the training dataset, or ``None`` when it has no length
            (then ``train.max_iter`` and ``train.iters_per_epoch`` must be given).
        total_batch_size: images per iteration over all workers.
    """
    if train_cfg.get("iters_per_epoch") is None:
        if num_images is None:
            raise ValueError(
                "resolve_schedule: the training dataset has no len(); set train.iters_per_epoch "
                "(and train.max_iter) explicitly"
            )
        train_cfg.iters_per_epoch = iters_per_epoch(num_images, total_batch_size)
    epochs = train_cfg.get("epochs")
    given = train_cfg.get("max_iter") is not None
    if not given:
        if epochs is None or epochs <= 0:
            raise ValueError(
                f"resolve_schedule: train.max_iter is None and train.epochs={epochs!r}; "
                "give a positive number of epochs or train.max_iter"
            )
        train_cfg.max_iter = int(round(epochs * train_cfg.iters_per_epoch))
    logger.info(
        "Schedule: %s images, total batch %d -> %d iterations per epoch; max_iter=%d (%s; %.2f epochs); "
        "epoch e of an E-epoch schedule (LR steps, warm-up, assigner switches) -> iteration round(e / E * %d)",
        num_images,
        total_batch_size,
        train_cfg.iters_per_epoch,
        train_cfg.max_iter,
        "given" if given else f"train.epochs={epochs} x iters_per_epoch",
        train_cfg.max_iter / train_cfg.iters_per_epoch,
        train_cfg.max_iter,
    )


def multistep_lr_schedule(
    milestones: Sequence[float],
    max_iter: int,
    epochs: float,
    iters_per_epoch: Optional[int] = None,
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    warmup_max_fraction: float = 0.1,
) -> ParamScheduler:
    """Step LR multiplier with milestones in epochs of an ``epochs``-epoch schedule, stretched to
    the run's ``max_iter`` iterations, as an fvcore ``ParamScheduler``.

    Detectron2's ``hooks.LRScheduler`` wraps the result in an ``LRMultiplier``. The multiplier is
    ``gamma ** k`` from the k-th milestone on, milestone m at iteration
    ``round(m / epochs * max_iter)`` (:func:`schedule_iteration`); a milestone that rounds to 0
    or ``max_iter`` never acts (a warning says so).

    Args:
        milestones: increasing epochs (floats allowed) in [0, epochs] at which the LR is
            multiplied by ``gamma``.
        max_iter: total training iterations (``train.max_iter``).
        epochs: the length of the schedule the milestones are written for (12 for a 1x / 12-epoch
            schedule), not necessarily the run's ``train.epochs``.
        iters_per_epoch: ``train.iters_per_epoch``; needed for the warm-up only.
        warmup_iters: linear warm-up (from ``warmup_factor`` to 1) in iterations of the schedule
            at its nominal length; see :func:`warmup_length` (``warmup_max_fraction``: its cap).
    """
    if max_iter is None:
        raise ValueError(
            "multistep_lr_schedule: max_iter must be resolved first (got None); train_net.py calls "
            "codetr.engine.resolve_schedule before building the LR scheduler"
        )
    if list(milestones) != sorted(milestones):
        raise ValueError(f"multistep_lr_schedule: milestones must be increasing, got {list(milestones)}")
    steps = [schedule_iteration(m, epochs, max_iter, "LR milestone") for m in milestones]
    kept = [s for s in steps if 0 < s < max_iter]
    if len(kept) != len(steps):
        logger.warning(
            "LR milestones %s (epochs of %s) = iterations %s of max_iter=%d; keeping %s (0 and max_iter never act)",
            list(milestones), epochs, steps, max_iter, kept,
        )
    warmup = warmup_length(warmup_iters, max_iter, epochs, iters_per_epoch, warmup_max_fraction)
    logger.info(
        "LR schedule: max_iter=%d; x%g at iterations %s (epochs %s of %s); linear warm-up %d iterations from x%g",
        max_iter, gamma, kept, list(milestones), epochs, warmup, warmup_factor,
    )
    values = [gamma**i for i in range(len(kept) + 1)]
    scheduler: ParamScheduler = MultiStepParamScheduler(values, num_updates=max_iter, milestones=kept)
    if warmup > 0:
        scheduler = WarmupParamScheduler(scheduler, warmup_factor, warmup / max_iter, warmup_method="linear")
    return scheduler
