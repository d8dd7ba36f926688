"""LR schedules with milestones in epochs of a schedule of ``epochs`` epochs, stretched to the run.

A schedule is written for its own length (``epochs``: the paper's 12 epochs of ``lr_multiplier_12ep``)
and every event in it is a fraction of that length: milestone m happens at iteration
``round(m / epochs * train.max_iter)``. ``train.max_iter`` is the run's length, which train_net.py
fills from ``train.epochs`` and the dataset size (codetr.engine.resolve_schedule) unless it is
given; so ``train.epochs=24`` or ``train.max_iter=300`` stretch or compress the whole schedule,
and a config need not keep ``train.epochs`` and the milestones in step. A config picks one:
``lr_multiplier = get_config(...).lr_multiplier_12ep`` or imports it, or calls ``multistep``.
``warmup_iters`` are iterations of the schedule run at its own length (``epochs x
train.iters_per_epoch``), scaled with the run and capped at ``warmup_max_fraction`` of it
(codetr.engine.warmup_length).
"""
from detectron2.config import LazyCall as L

from codetr.engine import multistep_lr_schedule


def multistep(milestones, epochs, warmup_iters=0, gamma=0.1):
    """A step schedule of ``epochs`` epochs decaying by ``gamma`` at each milestone (in epochs)."""
    return L(multistep_lr_schedule)(
        milestones=list(milestones),
        epochs=epochs,
        gamma=gamma,
        warmup_iters=warmup_iters,
        warmup_factor=0.001,
        warmup_max_fraction=0.1,
        max_iter="${train.max_iter}",
        iters_per_epoch="${train.iters_per_epoch}",
    )


# DETR family (detrex coco_schedule): no warm-up, x0.1 one epoch before the end (24/36: as detrex)
lr_multiplier_12ep = multistep([11], epochs=12)
lr_multiplier_24ep = multistep([20], epochs=24)
lr_multiplier_36ep = multistep([30], epochs=36)
lr_multiplier_50ep = multistep([40], epochs=50)
# dense detectors (mmdet 1x: 500-iteration linear warm-up, x0.1 at epochs 8 and 11)
lr_multiplier_1x_warmup = multistep([8, 11], epochs=12, warmup_iters=500)
