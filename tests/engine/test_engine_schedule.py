"""Epochs -> iterations and the epoch-based step LR schedule, against hand-computed values."""
import os

import pytest
import torch
from omegaconf import OmegaConf

from detectron2.config import LazyConfig, instantiate
from detectron2.solver import LRMultiplier

from codetr.engine import iters_per_epoch, multistep_lr_schedule, resolve_schedule

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
    sched = multistep_lr_schedule([8, 11], max_iter=120, iters_per_epoch=10)
    assert sched(0.0) == 1.0
    assert sched(79 / 120) == 1.0
    assert sched(80 / 120) == pytest.approx(0.1)
    assert sched(109 / 120) == pytest.approx(0.1)
    assert sched(110 / 120) == pytest.approx(0.01)


def test_multistep_drives_detectron2_lr_multiplier():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = LRMultiplier(opt, multistep_lr_schedule([1], max_iter=6, iters_per_epoch=4), max_iter=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0, 2.0, 2.0, 2.0, 0.2, 0.2])


def test_multistep_drops_milestones_beyond_max_iter():
    sched = multistep_lr_schedule([11], max_iter=50, iters_per_epoch=10)  # milestone 110 >= 50
    assert [sched(i / 50) for i in (0, 25, 49)] == [1.0, 1.0, 1.0]


def test_multistep_linear_warmup():
    sched = multistep_lr_schedule([8], max_iter=100, iters_per_epoch=10, warmup_iters=10, warmup_factor=0.001)
    assert sched(0.0) == pytest.approx(0.001)
    assert sched(0.05) == pytest.approx(0.001 + (1 - 0.001) * 0.5)
    assert sched(0.10) == pytest.approx(1.0)
    assert sched(0.80) == pytest.approx(0.1)


def test_multistep_requires_resolved_lengths():
    with pytest.raises(ValueError, match="resolve"):
        multistep_lr_schedule([11], max_iter=None, iters_per_epoch=None)


def test_common_schedule_config_reads_train_fields():
    sched_cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/schedule.py"))
    train_cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/train.py"))
    cfg = OmegaConf.create({"train": train_cfg.train, "lr_multiplier": sched_cfg.lr_multiplier_12ep})
    resolve_schedule(cfg.train, num_images=100, total_batch_size=4)  # 25 it/epoch, 12 epochs
    assert cfg.train.max_iter == 300
    sched = instantiate(cfg.lr_multiplier)
    assert sched(274 / 300) == 1.0  # epoch 11 starts at iteration 275
    assert sched(275 / 300) == pytest.approx(0.1)
