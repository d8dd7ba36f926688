"""Optimizer parameter groups (detrex convention).

detrex builds its groups with Detectron2's ``get_default_optimizer_params(base_lr,
weight_decay_norm=0.0, lr_factor_func=lambda name: 0.1 if "backbone" in name else 1)``. We do the
same, plus no weight decay on embeddings (``nn.Embedding`` weights and the learned query / level
embeddings of the DETR family), and take the LR factors as a plain dict so configs stay
serialisable and overridable from the command line (``optimizer.params.lr_factors.backbone=0.2``).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Optional

from torch import nn

from detectron2.solver.build import reduce_param_groups

__all__ = ["get_optimizer_params", "NORM_TYPES", "DEFAULT_EMBED_NAMES"]

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm, detectron2's NaiveSyncBatchNorm
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

# Parameter / module names (one dotted component) treated as embeddings. Note that the DETR
# heads ``class_embed`` / ``bbox_embed`` are Linear / MLP layers and are *not* embeddings.
DEFAULT_EMBED_NAMES = (
    "level_embed",
    "level_embeds",
    "tgt_embed",
    "query_embed",
    "refpoint_embed",
    "label_enc",
    "pos_embed",
    "absolute_pos_embed",
    "relative_position_bias_table",
)


def get_optimizer_params(
    model: nn.Module,
    base_lr: float,
    weight_decay: Optional[float] = None,
    weight_decay_norm: Optional[float] = 0.0,
    weight_decay_embed: Optional[float] = 0.0,
    embed_names: Iterable[str] = DEFAULT_EMBED_NAMES,
    lr_factors: Optional[Dict[str, float]] = None,
    weight_decay_factors: Optional[Dict[str, float]] = None,
) -> List[Dict[str, Any]]:
    """Parameter groups for ``torch.optim`` optimizers.

    Every trainable parameter gets ``lr = base_lr * factor`` where ``factor`` is the value of the
    first key of ``lr_factors`` that is a substring of the parameter's full name (1 if none),
    e.g. ``{"backbone": 0.1}``. Weight decay is ``weight_decay`` (or the optimizer's default when
    ``None``), except ``weight_decay_norm`` for parameters of normalisation layers and
    ``weight_decay_embed`` for embeddings: weights of ``nn.Embedding`` modules and parameters
    whose dotted name contains a component listed in ``embed_names``. ``None`` for either means
    "no special treatment". ``weight_decay_factors`` then multiplies the weight decay of the
    parameters whose full name contains one of its keys (the first that matches), e.g. DEQDet's
    ``{"decoder": 10}`` (mmengine's ``custom_keys`` ``decay_mult``); it needs ``weight_decay``.
    Frozen parameters (``requires_grad=False``) are skipped; shared parameters appear once.
    Groups with equal hyper-parameters are merged.
    """
    lr_factors = dict(lr_factors or {})
    weight_decay_factors = dict(weight_decay_factors or {})
    if weight_decay_factors and weight_decay is None:
        raise ValueError(
            f"get_optimizer_params: weight_decay_factors={weight_decay_factors} need an explicit weight_decay "
            "(the value they multiply), got None"
        )
    embed_names = set(embed_names)
    defaults: Dict[str, float] = {"lr": base_lr}
    if weight_decay is not None:
        defaults["weight_decay"] = weight_decay

    groups: List[Dict[str, Any]] = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            hyper = copy.copy(defaults)
            if weight_decay_norm is not None and isinstance(module, NORM_TYPES):
                hyper["weight_decay"] = weight_decay_norm
            if weight_decay_embed is not None and (
                isinstance(module, nn.Embedding) or embed_names.intersection(full_name.split("."))
            ):
                hyper["weight_decay"] = weight_decay_embed
            factor = next((f for key, f in lr_factors.items() if key in full_name), 1.0)
            hyper["lr"] = base_lr * factor
            wd_factor = next((f for key, f in weight_decay_factors.items() if key in full_name), None)
            if wd_factor is not None:  # weight_decay is given, so hyper has a weight_decay
                hyper["weight_decay"] = hyper["weight_decay"] * wd_factor
            groups.append({"params": [param], **hyper})
    if not groups:
        raise ValueError("get_optimizer_params: the model has no trainable parameters")
    return reduce_param_groups(groups)

