#!/usr/bin/env python
"""Convert an official / detrex / mmdet checkpoint into a Detectron2 checkpoint of this project.

    python tools/convert_checkpoint.py --source detrex-dino dino_r50_4scale_12ep_49_2AP.pth out.pth
    python tools/convert_checkpoint.py --source dino-official checkpoint0011_4scale.pth out.pth --allow-unsafe-pickle
    python tools/convert_checkpoint.py --list-sources

The input is read by ``codetr.checkpoint.load_checkpoint_file`` (``torch.load(weights_only=True)``,
a restricted unpickler for ``.pkl``); files that need general unpickling (e.g. the DINO
repository's checkpoints, which store an ``argparse.Namespace``) are refused unless
``--allow-unsafe-pickle`` (alias ``--allow-pickle``) is given (only for files you trust). Every
source key is mapped or explicitly dropped; unknown keys and shape mismatches are errors naming the
key. The result is
then checked against the matching config's model (its keys and shapes, built on the meta
device: no memory, no weights): by default the config the source selects, or ``--config-file``
with optional ``KEY=VALUE`` overrides; ``--no-verify`` skips this.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from typing import List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))

from codetr.checkpoint import (  # noqa: E402
    CheckpointConversionError,
    SourceNotImplementedError,
    convert,
    extract_state_dict,
    get_source,
    list_sources,
    load_checkpoint_file,
    verify_state_dict,
)


def _resolve(path: str) -> str:
    if os.path.exists(path) or os.path.isabs(path):
        return path
    return os.path.join(REPO, path)


def target_shapes(config_file: str, overrides: List[str]):
    """{key: shape} of the model of ``config_file`` (with overrides), built on the meta device."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(_resolve(config_file)), overrides)
    with torch.device("meta"):
        model = instantiate(cfg.model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--source", help="checkpoint format (see --list-sources)")
    p.add_argument("input", nargs="?", help="source checkpoint (.pth)")
    p.add_argument("output", nargs="?", help="converted Detectron2 checkpoint to write (.pth)")
    p.add_argument("--drop-training-weights", action="store_true",
                   help="drop weights used only in training (denoising label embedding, auxiliary heads)")
    p.add_argument("--allow-unsafe-pickle", "--allow-pickle", dest="allow_unsafe_pickle", action="store_true",
                   help="allow general unpickling of the input (can execute code: trusted files only)")
    p.add_argument("--config-file", help="verify against this config (default: the one the source selects)")
    p.add_argument("--no-verify", action="store_true", help="do not check the result against a config's model")
    p.add_argument("--list-sources", action="store_true", help="list the known sources and exit")
    p.add_argument("opts", nargs="*", help="config overrides KEY=VALUE for the verification model")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.list_sources:
        for name in list_sources():
            src = get_source(name)
            print(f"{name:20s} {src.description}")
        return 0
    if not (args.source and args.input and args.output):
        build_parser().error("--source, input and output are required")
    try:
        source = get_source(args.source)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    try:
        state_dict = extract_state_dict(load_checkpoint_file(args.input, allow_unsafe_pickle=args.allow_unsafe_pickle))
        result = convert(args.source, state_dict, drop_training_weights=args.drop_training_weights)
        config = None
        if not args.no_verify:
            config = args.config_file or (source.select_config(result.state_dict) if source.select_config else None)
        if config:
            overrides = list(result.config_overrides) + list(args.opts)
            verify_state_dict(result.state_dict, target_shapes(config, overrides), f"{args.source} -> {config}")
    except SourceNotImplementedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    torch.save(result.checkpoint(), args.output)
    reasons = Counter(d.reason if not d.reason.startswith("alias of") else "tied copies of mapped tensors"
                      for d in result.dropped)
    print(f"{args.source}: {len(state_dict)} source keys -> {len(result.state_dict)} keys written to {args.output}")
    for reason, n in sorted(reasons.items()):
        print(f"  dropped {n:4d}: {reason}")
    if config:
        print(f"  verified against {config}: same keys and shapes")
        overrides = " ".join(list(result.config_overrides) + list(args.opts))
        print(f"Evaluate with:\n  python train_net.py --config-file {config} --eval-only "
              f"train.init_checkpoint={args.output} {overrides}".rstrip())
    elif args.no_verify:
        print("  not verified against a config (--no-verify)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
