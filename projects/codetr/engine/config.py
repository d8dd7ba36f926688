"""Command-line overrides that refuse unknown keys.

Detectron2's ``LazyConfig.apply_overrides`` creates any key it is given, so a typo
(``train.max_iters=5``, ``train.foo=1``) runs silently with the default. :func:`apply_overrides_strict`
checks every override against the config first and raises a ``ValueError`` naming the unknown key
and the closest existing ones (``difflib``). An override ``a.b.c=v`` is accepted when

- ``a.b.c`` already exists (its value may be anything, including ``None``), or
- a prefix ``a`` / ``a.b`` is a LazyCall node (it has ``_target_``) whose target accepts the next
  component as a keyword argument (``inspect.signature``; a class whose ``__init__`` hands
  ``**kwargs`` to its base class accepts what the base accepts; another ``**kwargs`` target or one
  without a signature accepts anything): ``model.size_divisibility=32`` adds an argument the config
  left at its default; the components below it are created, or
- it is written ``+a.b.c=v`` (Hydra's convention for adding a key; an error when the key exists)
  or ``++a.b.c=v`` (add or replace).

The values are then applied by ``LazyConfig.apply_overrides`` (Hydra's override grammar), so they
parse exactly as in Detectron2.
"""
from __future__ import annotations

import copy
import difflib
import inspect
from typing import Any, List, Sequence

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from detectron2.config import LazyConfig
from detectron2.utils.registry import locate

__all__ = ["apply_overrides_strict", "check_override_key"]


def _keyword_params(func) -> "tuple[set, bool] | None":
    """(names of ``func``'s keyword parameters, whether it has ``**kwargs``), or None when its
    signature is unknown."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins and the like: no schema to check against
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in params if p.kind in kinds}
    return names, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _target_accepts(node: DictConfig, name: str) -> bool:
    """Whether the LazyCall ``node``'s target takes a keyword argument ``name`` (True when its
    signature is unknown or has ``**kwargs`` that go anywhere but a base class). A class whose
    ``__init__`` passes ``**kwargs`` on to its base classes' (``QueryDetector`` subclasses) accepts
    what one of those accepts: the ``__init__``s along the MRO are read until one has no
    ``**kwargs``; ``nn.Module`` and ``object`` accept nothing more."""
    target = node._target_
    if isinstance(target, str):
        try:
            target = locate(target)
        except Exception:  # an unresolvable target fails at instantiate(); accept here
            return True
    if not inspect.isclass(target):
        found = _keyword_params(target)
        return found is None or name in found[0] or found[1]
    closed = (object.__init__, torch.nn.Module.__init__)
    for cls in target.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        if init in closed:
            return False
        found = _keyword_params(init)
        if found is None or name in found[0]:
            return True
        if not found[1]:
            return False
    return False


def _unknown(key: str, prefix: str, name: str, candidates: Sequence[str]) -> ValueError:
    where = f"under {prefix!r}" if prefix else "at the top level"
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(f'{prefix}.{c}' if prefix else c) for c in close)}? " if close else ""
    return ValueError(
        f"config override {key!r}: there is no key {name!r} {where}; {hint}"
        f"valid keys there: {sorted(candidates)}. Write +{key}=... to add a new key on purpose."
    )


def check_override_key(cfg: DictConfig, key: str) -> None:
    """Raise ``ValueError`` unless ``key`` (dotted) may be set by a plain ``key=value`` override
    (see the module docstring for the rule)."""
    parts = key.split(".")
    node: Any = cfg
    for i, name in enumerate(parts):
        prefix = ".".join(parts[:i])
        if isinstance(node, ListConfig):
            if not (name.lstrip("-").isdigit() and -len(node) <= int(name) < len(node)):
                raise ValueError(
                    f"config override {key!r}: {prefix!r} is a list of {len(node)} items; {name!r} is not an index of it"
                )
            node = node[int(name)]
            continue
        if not isinstance(node, DictConfig):
            raise ValueError(
                f"config override {key!r}: {prefix!r} is a {type(node).__name__} ({node!r}), not a config node "
                f"that could hold {name!r}"
            )
        if name in node.keys():
            node = node._get_node(name)
            if not isinstance(node, (DictConfig, ListConfig)):
                node = node._value()
            continue
        if "_target_" in node and _target_accepts(node, name):
            return  # a keyword argument of the LazyCall left at its default; the rest is created
        raise _unknown(key, prefix, name, [k for k in node.keys() if k != "_target_"])


def apply_overrides_strict(cfg: DictConfig, overrides: List[str]) -> DictConfig:
    """``LazyConfig.apply_overrides(cfg, overrides)`` after checking every key (in place; returns
    ``cfg``). Unknown keys raise ``ValueError`` naming the key and the closest valid ones.

    The overrides are checked in order against a copy that has the earlier ones applied, so that
    ``node._target_=...`` followed by that target's arguments works; ``cfg`` is only changed when
    all of them pass."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    trial = copy.deepcopy(cfg)
    for override, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        _check(trial, override, parsed)
        LazyConfig.apply_overrides(trial, [override])
    return LazyConfig.apply_overrides(cfg, overrides)


def _check(cfg: DictConfig, override: str, parsed) -> None:
    """Raise ``ValueError`` unless the parsed Hydra ``override`` may be applied to ``cfg``."""
    key = parsed.key_or_group
    if parsed.is_delete():
        raise ValueError(f"config override {override!r}: deleting keys (~key) is not supported")
    if parsed.is_force_add():
        return
    if parsed.is_add():
        try:
            exists = OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False) is not _MISSING
        except Exception:  # a non-config on the path: LazyConfig.apply_overrides reports it
            exists = False
        if exists:
            raise ValueError(
                f"config override {override!r}: {key!r} already exists; drop the '+' to change it "
                f"(or write ++{key}=... to add or replace)"
            )
        return
    check_override_key(cfg, key)


_MISSING = object()
