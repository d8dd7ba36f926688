"""Schedules in epochs.

Configs state their length in epochs (``train.epochs``) and their LR milestones in epochs
(``lr_multiplier.milestones``); Detectron2's trainer counts iterations. One epoch is

    iters_per_epoch = ceil(num_images / dataloader.train.total_batch_size)

where ``num_images`` is the length of the training dataset *after* Detectron2's filtering (the
list that ``dataloader.train.dataset`` instantiates to). :func:`resolve_schedule` fills
``train.iters_per_epoch`` and ``train.max_iter`` when they are ``None``; a value given in the
config or on the command line (``train.max_iter=20`` for a quick run) always wins.

For reference: detrex counts a COCO "epoch" as a fixed 7500 iterations at batch 16 (12 ep = 90k);
COCO train2017 with empty images removed has 117266 images, i.e. 7330 iterations per epoch here.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

from fvcore.common.param_scheduler import MultiStepParamScheduler, ParamScheduler

from detectron2.solver import WarmupParamScheduler

__all__ = ["iters_per_epoch", "resolve_schedule", "multistep_lr_schedule"]

logger = logging.getLogger(__name__)


def iters_per_epoch(num_images: int, total_batch_size: int) -> int:
    """Iterations needed to see ``num_images`` images once at ``total_batch_size`` images per
    iteration (summed over all workers), rounded up."""
    if num_images <= 0:
        raise ValueError(f"iters_per_epoch: the training dataset is empty (num_images={num_images})")
    if total_batch_size <= 0:
        raise ValueError(f"iters_per_epoch: total_batch_size must be positive, got {total_batch_size}")
    return math.ceil(num_images / total_batch_size)


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
    if train_cfg.get("max_iter") is None:
        epochs = train_cfg.get("epochs")
        if epochs is None or epochs <= 0:
            raise ValueError(
                f"resolve_schedule: train.max_iter is None and train.epochs={epochs!r}; "
                "give a positive number of epochs or train.max_iter"
            )
        train_cfg.max_iter = int(round(epochs * train_cfg.iters_per_epoch))
    logger.info(
        "Schedule: %s images, total batch %d -> %d iterations per epoch; max_iter=%d (%.2f epochs)",
        num_images,
        total_batch_size,
        train_cfg.iters_per_epoch,
        train_cfg.max_iter,
        train_cfg.max_iter / train_cfg.iters_per_epoch,
    )


def multistep_lr_schedule(
    milestones: Sequence[float],
    max_iter: int,
    iters_per_epoch: int,
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
) -> ParamScheduler:
    """Step LR multiplier with milestones in epochs, as an fvcore ``ParamScheduler``.

    Detectron2's ``hooks.LRScheduler`` wraps the result in an ``LRMultiplier``. The multiplier is
    ``gamma ** k`` after the k-th milestone (``milestone * iters_per_epoch`` iterations).
    Milestones at or beyond ``max_iter`` are dropped (a quick run with ``train.max_iter=N``
    then simply never decays). Give milestones in iterations by setting
    ``iters_per_epoch=1``.

    Args:
        milestones: epochs (floats allowed) at which the LR is multiplied by ``gamma``.
        max_iter: total training iterations (``train.max_iter``).
        iters_per_epoch: ``train.iters_per_epoch``.
        warmup_iters: linear warm-up length in iterations, from ``warmup_factor`` to 1.
    """
    if max_iter is None or iters_per_epoch is None:
        raise ValueError(
            "multistep_lr_schedule: max_iter and iters_per_epoch must be resolved first "
            f"(got max_iter={max_iter}, iters_per_epoch={iters_per_epoch}); train_net.py calls "
            "codetr.engine.resolve_schedule before building the LR scheduler"
        )
    if list(milestones) != sorted(milestones):
        raise ValueError(f"multistep_lr_schedule: milestones must be increasing, got {list(milestones)}")
    steps = [int(round(m * iters_per_epoch)) for m in milestones]
    kept = [s for s in steps if 0 < s < max_iter]
    if len(kept) != len(steps):
        logger.warning(
            "LR milestones %s (epochs) = %s iterations; keeping %s within max_iter=%d",
            list(milestones),
            steps,
            kept,
            max_iter,
        )
    values = [gamma**i for i in range(len(kept) + 1)]
    scheduler: ParamScheduler = MultiStepParamScheduler(values, num_updates=max_iter, milestones=kept)
    if warmup_iters > 0:
        scheduler = WarmupParamScheduler(
            scheduler, warmup_factor, min(warmup_iters / max_iter, 1.0), warmup_method="linear"
        )
    return scheduler
