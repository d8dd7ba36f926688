"""LR schedules with milestones in epochs of the ``train.epochs``-epoch schedule.

``max_iter`` / ``epochs`` / ``iters_per_epoch`` point at ``train.*``, which train_net.py fills
from the dataset size (see codetr.engine.resolve_schedule) before the scheduler is instantiated.
Milestone m happens at iteration ``round(m / train.epochs * train.max_iter)``: at epoch m when
``max_iter`` is derived from the dataset, at the same fraction of the run when
``train.max_iter=N`` is given. A config picks one: ``lr_multiplier =
get_config(...).lr_multiplier_12ep`` or imports it, and sets ``train.epochs`` to match
(``train.epochs=12`` for ``lr_multiplier_12ep``; a milestone beyond ``train.epochs`` is an error).
``warmup_iters`` are iterations of the schedule at its nominal length (``train.epochs x
train.iters_per_epoch``), scaled with the run and capped at ``warmup_max_fraction`` of it
(codetr.engine.warmup_length).
"""
from detectron2.config import LazyCall as L

from codetr.engine import multistep_lr_schedule


def multistep(milestones, warmup_iters=0, gamma=0.1):
    """A step schedule decaying by ``gamma`` at each milestone (in epochs of ``train.epochs``)."""
    return L(multistep_lr_schedule)(
        milestones=list(milestones),
        gamma=gamma,
        warmup_iters=warmup_iters,
        warmup_factor=0.001,
        warmup_max_fraction=0.1,
        max_iter="${train.max_iter}",
        epochs="${train.epochs}",
        iters_per_epoch="${train.iters_per_epoch}",
    )


# DETR family (detrex coco_schedule): no warm-up, x0.1 one epoch before the end (24/36: as detrex)
lr_multiplier_12ep = multistep([11])
lr_multiplier_24ep = multistep([20])
lr_multiplier_36ep = multistep([30])
lr_multiplier_50ep = multistep([40])
# dense detectors (mmdet 1x: 500-iteration linear warm-up, x0.1 at epochs 8 and 11)
lr_multiplier_1x_warmup = multistep([8, 11], warmup_iters=500)
