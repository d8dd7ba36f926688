"""Command-line and output-folder checks of train_net.py, and its checkpointer.

* ``parse_args``: Detectron2's ``default_argument_parser`` ends with ``opts`` (``nargs=REMAINDER``),
  so a flag written after the config overrides (``... train.max_iter=5 --resume``) used to land
  in ``opts`` and fail later as an unparsable override. Here flags are accepted anywhere.
* ``check_output_dir``: training into a folder that already holds checkpoints without
  ``--resume`` would overwrite them (``model_final.pth``, ``model_XXXXXXX.pth``,
  ``last_checkpoint``): refused unless ``train.overwrite=True``.
* ``build_checkpointer``: ``codetr.checkpoint.Checkpointer`` configured from ``train.*``
  (``allow_unsafe_pickle``, ``init_checkpoint_partial``).
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
from typing import List, Optional, Sequence

__all__ = ["parse_args", "split_flags", "check_output_dir", "existing_checkpoints", "build_checkpointer",
           "load_for_evaluation"]

logger = logging.getLogger(__name__)


def split_flags(parser: argparse.ArgumentParser, opts: Sequence[str]):
    """Split ``opts`` (what followed the first config override) into the parser's flags (with
    their values) and the ``KEY=VALUE`` overrides. Raises ``SystemExit`` through
    ``parser.error`` on a token that is neither (e.g. ``train.max_iter 5`` or ``--no-such-flag``)."""
    by_option = {s: a for a in parser._actions for s in a.option_strings}
    flags: List[str] = []
    overrides: List[str] = []
    i = 0
    while i < len(opts):
        token = opts[i]
        name = token.split("=", 1)[0]
        if token.startswith("-") and name in by_option:
            action = by_option[name]
            flags.append(token)
            takes_value = action.nargs != 0 and "=" not in token
            if takes_value and i + 1 < len(opts):
                flags.append(opts[i + 1])
                i += 1
        elif token.startswith("-"):
            parser.error(f"unknown flag {token!r} among the config overrides; known flags: "
                         f"{', '.join(sorted(s for s in by_option if s.startswith('--')))}")
        elif "=" not in token:
            parser.error(f"config override {token!r} is not KEY=VALUE (e.g. train.max_iter=20)")
        else:
            overrides.append(token)
        i += 1
    return flags, overrides


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args`` that also accepts flags (``--resume``, ``--eval-only``,
    ``--num-gpus 2``, ...) after the config overrides."""
    args = parser.parse_args(argv)
    flags, overrides = split_flags(parser, args.opts or [])
    if flags:
        args = parser.parse_args(list(flags), namespace=args)
    args.opts = overrides
    return args


def existing_checkpoints(output_dir: str) -> List[str]:
    """Checkpoint files of a previous run in ``output_dir`` (what a new run would overwrite)."""
    found = glob.glob(os.path.join(output_dir, "model_*.pth"))
    last = os.path.join(output_dir, "last_checkpoint")
    if os.path.isfile(last):
        found.append(last)
    return sorted(found)


def check_output_dir(train_cfg, resume: bool, eval_only: bool) -> None:
    """Refuse to start a training run (not ``--resume``, not ``--eval-only``) in a folder that
    holds checkpoints of another run, unless ``train.overwrite=True``."""
    if resume or eval_only or train_cfg.get("overwrite", False):
        return
    found = existing_checkpoints(train_cfg.output_dir)
    if found:
        names = ", ".join(os.path.basename(f) for f in found[:4]) + (" ..." if len(found) > 4 else "")
        raise FileExistsError(
            f"train.output_dir={train_cfg.output_dir!r} already holds checkpoints of a previous run ({names}); "
            "training would overwrite them. Pass --resume to continue that run, choose another "
            "train.output_dir, or set train.overwrite=True to overwrite them."
        )


def build_checkpointer(train_cfg, model, save_dir: str = "", **kwargs):
    """``codetr.checkpoint.Checkpointer`` for ``model`` with the safety options of ``train_cfg``
    (``allow_unsafe_pickle``, ``init_checkpoint_partial``; both default to False)."""
    from ..checkpoint import Checkpointer

    return Checkpointer(
        model,
        save_dir,
        allow_unsafe_pickle=train_cfg.get("allow_unsafe_pickle", False),
        partial=train_cfg.get("init_checkpoint_partial", False),
        **kwargs,
    )


def load_for_evaluation(cfg, model, save_dir: str = ""):
    """Load ``cfg.train.init_checkpoint`` into ``model`` through ``build_checkpointer`` (with the
    EMA when ``train.model_ema.enabled``) and return the module to evaluate: the EMA copy when the
    config asks for it (``use_ema_weights_for_eval_only``, default True) and the checkpoint has EMA
    weights, else ``model``. Shared by ``train_net.py --eval-only``, the demo and the tools."""
    from .ema import build_config_ema, ema_has_weights

    ema = build_config_ema(cfg.train, model)
    build_checkpointer(cfg.train, model, save_dir, **({"ema": ema} if ema is not None else {})).load(
        cfg.train.init_checkpoint
    )
    if ema is None or not cfg.train.model_ema.get("use_ema_weights_for_eval_only", True):
        return model
    if ema_has_weights(ema):
        logger.info("Evaluating the EMA weights of %s", cfg.train.init_checkpoint)
        return ema.module
    logger.warning("%s has no EMA weights: evaluating the raw weights", cfg.train.init_checkpoint)
    return model
