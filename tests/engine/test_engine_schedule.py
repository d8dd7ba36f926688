"""Epochs -> iterations and the epoch-based step LR schedule, against hand-computed values.

Every event of a schedule (LR milestones, warm-up, TOOD's switch) is a fraction of the run:
epoch e of an E-epoch schedule happens at iteration round(e / E * max_iter)."""
import logging
import os

import pytest
import torch
from omegaconf import OmegaConf

from detectron2.config import LazyConfig, instantiate
from detectron2.solver import LRMultiplier

from codetr.engine import iters_per_epoch, multistep_lr_schedule, resolve_schedule, schedule_iteration, warmup_length

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "num_images, batch, expected",
    [(6, 2, 3), (6, 4, 2), (8, 4, 2), (1, 16, 1), (117266, 16, 7330)],  # 117266/16 = 7329.125
)
def test_iters_per_epoch_rounds_up(num_images, batch, expected):
    assert iters_per_epoch(num_images, batch) == expected


@pytest.mark.parametrize("num_images, batch", [(0, 2), (5, 0)])
def test_iters_per_epoch_rejects_bad_sizes(num_images, batch):
    with pytest.raises(ValueError):
        iters_per_epoch(num_images, batch)


def test_resolve_schedule_fills_from_epochs():
    train = OmegaConf.create({"epochs": 12, "max_iter": None, "iters_per_epoch": None})
    resolve_schedule(train, num_images=2000, total_batch_size=16)  # 125 it/epoch
    assert train.iters_per_epoch == 125
    assert train.max_iter == 1500


def test_resolve_schedule_keeps_explicit_values():
    train = OmegaConf.create({"epochs": 12, "max_iter": 7, "iters_per_epoch": None})
    resolve_schedule(train, num_images=2000, total_batch_size=16)
    assert (train.max_iter, train.iters_per_epoch) == (7, 125)
    train = OmegaConf.create({"epochs": 2, "max_iter": None, "iters_per_epoch": 10})
    resolve_schedule(train, num_images=None, total_batch_size=16)
    assert (train.max_iter, train.iters_per_epoch) == (20, 10)


def test_resolve_schedule_errors():
    with pytest.raises(ValueError, match="epochs"):
        resolve_schedule(OmegaConf.create({"epochs": None, "max_iter": None}), 10, 2)
    with pytest.raises(ValueError, match="len"):
        resolve_schedule(OmegaConf.create({"epochs": 1, "max_iter": 5}), None, 2)


def test_multistep_milestones_in_epochs():
    # 12 epochs of 10 iterations, decay at epochs 8 and 11 -> iterations 80 and 110
    sched = multistep_lr_schedule([8, 11], max_iter=120, epochs=12, iters_per_epoch=10)
    assert sched(0.0) == 1.0
    assert sched(79 / 120) == 1.0
    assert sched(80 / 120) == pytest.approx(0.1)
    assert sched(109 / 120) == pytest.approx(0.1)
    assert sched(110 / 120) == pytest.approx(0.01)


def test_multistep_drives_detectron2_lr_multiplier():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    # epoch 1 of a 1.5-epoch schedule run in 6 iterations: iteration 4
    sched = LRMultiplier(opt, multistep_lr_schedule([1], max_iter=6, epochs=1.5, iters_per_epoch=4), max_iter=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0, 2.0, 2.0, 2.0, 0.2, 0.2])


def test_multistep_milestones_follow_a_given_max_iter():
    # Changed semantics: milestones used to stay at milestone * iters_per_epoch (110 here, then
    # dropped as >= max_iter=50); they are now the same fraction of the run: round(11/12 * 50) = 46
    sched = multistep_lr_schedule([11], max_iter=50, epochs=12, iters_per_epoch=10)
    assert [sched(i / 50) for i in (0, 25, 45)] == [1.0, 1.0, 1.0]
    assert sched(46 / 50) == pytest.approx(0.1)


def test_multistep_rejects_milestones_beyond_the_schedule():
    with pytest.raises(ValueError, match=r"LR milestone 30 .* outside the 12-epoch schedule"):
        multistep_lr_schedule([30], max_iter=50, epochs=12)
    with pytest.raises(ValueError, match="length in epochs"):
        multistep_lr_schedule([11], max_iter=50, epochs=None)


def test_multistep_warns_about_milestones_that_never_act(caplog):
    with caplog.at_level(logging.WARNING, logger="codetr.engine.schedule"):
        sched = multistep_lr_schedule([0.01, 12], max_iter=10, epochs=12)  # iterations 0 and 10
    assert "keeping []" in caplog.text
    assert [sched(i / 10) for i in (0, 9)] == [1.0, 1.0]


@pytest.mark.parametrize(
    "epoch, epochs, max_iter, expected",
    [(11, 12, 300, 275), (8, 12, 300, 200), (4, 12, 300, 100), (0, 12, 300, 0), (12, 12, 300, 300),
     (11, 12, 36, 33), (11 / 6, 2, 1000, 917), (4, 12, 87960, 29320), (1, 3, 2, 1)],
)
def test_schedule_iteration_hand_computed(epoch, epochs, max_iter, expected):
    assert schedule_iteration(epoch, epochs, max_iter) == expected


def test_schedule_iteration_errors():
    with pytest.raises(ValueError, match="outside"):
        schedule_iteration(13, 12, 100)
    with pytest.raises(ValueError, match="outside"):
        schedule_iteration(-1, 12, 100)
    with pytest.raises(ValueError, match="max_iter"):
        schedule_iteration(1, 12, None)
    with pytest.raises(ValueError, match="length in epochs"):
        schedule_iteration(1, 0, 100)


@pytest.mark.parametrize(
    "warmup, max_iter, epochs, ipe, expected",
    [
        (500, 87960, 12, 7330, 500),  # COCO 1x at its nominal length: the official 500
        (500, 300, 12, 7330, 2),  # a 300-iteration COCO run: 500 * 300 / 87960 = 1.7
        (500, 300, 12, 3, 30),  # 500 * 300 / 36 = 4167, capped at 10% of 300
        (500, 36, 12, 3, 4),  # a 36-iteration nominal schedule: 500, capped at round(3.6)
        (100, 1000, 2, 500, 100),  # tood_r18_shapes: 100 of 1000 = exactly the cap
        (100, 40, 2, 500, 4),  # ... with train.max_iter=40
        (0, 300, 12, 3, 0),
    ],
)
def test_warmup_length_hand_computed(warmup, max_iter, epochs, ipe, expected):
    assert warmup_length(warmup, max_iter, epochs, ipe) == expected


def test_multistep_linear_warmup():
    # 10 epochs of 10 iterations run at their nominal length: warm-up 10 iterations (= the 10% cap)
    sched = multistep_lr_schedule([8], max_iter=100, epochs=10, iters_per_epoch=10, warmup_iters=10, warmup_factor=0.001)
    assert sched(0.0) == pytest.approx(0.001)
    assert sched(0.05) == pytest.approx(0.001 + (1 - 0.001) * 0.5)
    assert sched(0.10) == pytest.approx(1.0)
    assert sched(0.80) == pytest.approx(0.1)


def test_multistep_requires_resolved_lengths():
    with pytest.raises(ValueError, match="resolve"):
        multistep_lr_schedule([11], max_iter=None, epochs=12, iters_per_epoch=None)


def test_common_schedule_config_reads_train_fields():
    sched_cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/schedule.py"))
    train_cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/train.py"))
    cfg = OmegaConf.create({"train": train_cfg.train, "lr_multiplier": sched_cfg.lr_multiplier_12ep})
    resolve_schedule(cfg.train, num_images=100, total_batch_size=4)  # 25 it/epoch, 12 epochs
    assert cfg.train.max_iter == 300
    sched = instantiate(cfg.lr_multiplier)
    assert sched(274 / 300) == 1.0  # epoch 11 starts at iteration 275
    assert sched(275 / 300) == pytest.approx(0.1)


def _lr_per_iteration(scheduler_cfg, max_iter):
    """The LR multiplier of each iteration 0..max_iter-1, as Detectron2's LRScheduler hook applies it."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = LRMultiplier(opt, instantiate(scheduler_cfg), max_iter=max_iter)
    lrs = []
    for _ in range(max_iter):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _schedule_cfg(name, **train):
    sched_cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/schedule.py"))
    train_cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/train.py")).train
    train_cfg.update(train)
    return OmegaConf.create({"train": train_cfg, "lr_multiplier": sched_cfg[name]})


def test_given_max_iter_moves_the_lr_drop_proportionally(caplog):
    """The issue's case: a 12-epoch DETR schedule (x0.1 at epoch 11) on 12 images at batch 4
    (3 iterations per epoch) with train.max_iter=300 dropped its LR at iteration 33; it drops at
    round(11 / 12 * 300) = 275."""
    cfg = _schedule_cfg("lr_multiplier_12ep", epochs=12, max_iter=300)
    resolve_schedule(cfg.train, num_images=12, total_batch_size=4)
    assert (cfg.train.iters_per_epoch, cfg.train.max_iter) == (3, 300)
    with caplog.at_level(logging.INFO, logger="codetr.engine.schedule"):
        lrs = _lr_per_iteration(cfg.lr_multiplier, 300)
    assert lrs[:275] == [1.0] * 275
    assert lrs[275:] == pytest.approx([0.1] * 25)
    assert "x0.1 at iterations [275] (epochs [11] of 12)" in caplog.text


def test_a_longer_run_in_epochs_stretches_the_schedule():
    """train.epochs=24 with the 12-epoch schedule: the LR drops after epoch 22 (11/12 of the run),
    not after epoch 11."""
    cfg = _schedule_cfg("lr_multiplier_12ep", epochs=24)
    resolve_schedule(cfg.train, num_images=100, total_batch_size=4)  # 25 per epoch, 600 iterations
    assert cfg.train.max_iter == 600
    sched = instantiate(cfg.lr_multiplier)
    assert sched(549 / 600) == 1.0 and sched(550 / 600) == pytest.approx(0.1)


def test_dense_1x_schedule_follows_a_given_max_iter():
    """TOOD's 1x schedule (warm-up 500, x0.1 at epochs 8 and 11) on 12 images at batch 4 with
    train.max_iter=300: it used to warm up for 500 iterations and step at 24 and 33 (<= 1% of the
    LR after iteration 33); now: warm-up 30 iterations (500 * 300 / 36 capped at 10%), steps at
    200 and 275."""
    cfg = _schedule_cfg("lr_multiplier_1x_warmup", epochs=12, max_iter=300)
    resolve_schedule(cfg.train, num_images=12, total_batch_size=4)
    lrs = _lr_per_iteration(cfg.lr_multiplier, 300)
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[15] == pytest.approx(0.001 + 0.999 * 15 / 30)
    assert lrs[30:200] == pytest.approx([1.0] * 170)
    assert lrs[200:275] == pytest.approx([0.1] * 75)
    assert lrs[275:] == pytest.approx([0.01] * 25)


def test_dense_1x_schedule_at_coco_length_is_the_official_one():
    cfg = _schedule_cfg("lr_multiplier_1x_warmup", epochs=12)
    resolve_schedule(cfg.train, num_images=117266, total_batch_size=16)  # 7330 per epoch
    assert cfg.train.max_iter == 87960
    sched = instantiate(cfg.lr_multiplier)
    assert sched(250 / 87960) == pytest.approx(0.001 + 0.999 * 0.5)  # warm-up 500 iterations
    assert sched(500 / 87960) == 1.0
    assert sched(58639 / 87960) == 1.0 and sched(58640 / 87960) == pytest.approx(0.1)  # 8 x 7330
    assert sched(80629 / 87960) == pytest.approx(0.1) and sched(80630 / 87960) == pytest.approx(0.01)
