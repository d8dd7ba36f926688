"""Exponential moving average of the model weights (``train.model_ema``).

Built on ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)``: the
averaged copy is a plain ``nn.Module`` (``ema.module``) that is evaluated like the model, and
``ema.state_dict()`` (``module.*`` plus ``n_averaged``) is stored under the ``"ema"`` key of the
``DetectionCheckpointer`` files. Buffers (e.g. BatchNorm statistics) are averaged too.
"""
from __future__ import annotations

import logging

from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from detectron2.engine import HookBase

__all__ = ["build_config_ema", "build_model_ema", "EMAHook", "ema_has_weights"]

logger = logging.getLogger(__name__)


def build_model_ema(model: nn.Module, decay: float = 0.999) -> AveragedModel:
    """A copy of ``model`` (unwrapped, not DDP) on the same device, updated by :class:`EMAHook`
    as ``ema = decay * ema + (1 - decay) * weights`` (the first update copies the weights)."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"train.model_ema.decay must be in (0, 1), got {decay}")
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    ema.eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def build_config_ema(train_cfg, model: nn.Module):
    """``build_model_ema(model, decay)`` when ``train_cfg.model_ema.enabled``, else None."""
    ema_cfg = train_cfg.get("model_ema", None)
    if ema_cfg is None or not ema_cfg.get("enabled", False):
        return None
    return build_model_ema(model, ema_cfg.get("decay", 0.999))


def ema_has_weights(ema: AveragedModel) -> bool:
    """Whether the EMA has been updated (or loaded from a checkpoint) at least once."""
    return int(ema.n_averaged.item()) > 0


class EMAHook(HookBase):
    """Updates the EMA after every optimizer step. Register it before the checkpointer and
    evaluation hooks so that they see the EMA of the same iteration."""

    def __init__(self, ema: AveragedModel, model: nn.Module):
        self.ema = ema
        self.model = model.module if isinstance(model, DistributedDataParallel) else model

    def after_step(self):
        self.ema.update_parameters(self.model)
