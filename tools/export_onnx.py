#!/usr/bin/env python
"""Export a detector to ONNX (standard operators only; runs in ONNX Runtime on the CPU).

    python tools/export_onnx.py --config-file configs/dino/dino_r50_4scale_12ep.py \\
        --weights model_final.pth --output dino.onnx [--image-size 800 1333 | --dynamic] [--opset 19]

The model of the config (DINO 4/5-scale, DN-Deformable-DETR, Co-DINO / Co-Deformable-DETR:
their DINO's inference graph, auxiliary weights of the checkpoint dropped; TOOD) is built on the
CPU in eval mode. The graph takes ``image`` (1, 3, H, W) uint8 in the config's input format and
returns ``labels`` (K,), ``boxes`` (K, 4) xyxy in the image's pixels, ``scores`` (K,); see
``codetr.export``. ``--image-size H W`` fixes the input size (default 800 1333); ``--dynamic``
accepts any size (the image size is then only the traced example). Without ``--weights`` the
randomly initialised model is exported (for latency measurements). Trailing ``key=value``
arguments override the config (LazyConfig syntax). Co-DINO's Soft-NMS is not exported.

``--weights`` is read without executing code from it (``--allow-unsafe-pickle`` for a trusted
file) and must fit the model as in train_net.py (``codetr.checkpoint.Checkpointer``: another
class count or another model is refused with the counts; ``train.init_checkpoint_partial=True``
loads what matches). The model is run once in PyTorch at the image size before tracing: a size it
cannot process is an error with its cause. The graph's metadata records the class count and the
config file (``tools/eval_onnx.py`` checks them).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, help="LazyConfig file (configs/...)")
    p.add_argument("--weights", default="", help="checkpoint (DetectionCheckpointer .pth); empty: random weights")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 19)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                      help="fixed input size (default 800 1333)")
    size.add_argument("--dynamic", action="store_true", help="any input size (traced at --example-size)")
    p.add_argument("--example-size", type=int, nargs=2, metavar=("H", "W"), default=(800, 1333),
                   help="with --dynamic: the size traced (every feature level must be at least 2 x 2)")
    p.add_argument("--deform-attn", choices=("grid_sample", "gather"), default="grid_sample",
                   help="ONNX form of ms_deform_attn (see codetr/export/onnx_ops.py)")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="allow full unpickling of --weights (can execute code: only for files you trust)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from detectron2.config import LazyConfig, instantiate

    from codetr.export.onnx_export import DEFAULT_OPSET, export_onnx
    from codetr.export.weights import load_inference_weights

    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    model = instantiate(cfg.model).cpu().eval()
    if args.weights:
        if not os.path.isfile(args.weights):
            print(f"error: --weights {args.weights!r} is not a file", file=sys.stderr)
            return 2
        try:
            dropped = load_inference_weights(
                model, args.weights,
                allow_unsafe_pickle=args.allow_unsafe_pickle or cfg.train.get("allow_unsafe_pickle", False),
                partial=cfg.train.get("init_checkpoint_partial", False))
        except ValueError as e:  # CheckpointMismatchError, UnsafeCheckpointError: the file and why
            print(f"error: {e}", file=sys.stderr)
            return 2
        if dropped:
            print(f"dropped {len(dropped)} auxiliary (training-only) tensors of {args.weights}")
    else:
        print("no --weights: exporting the randomly initialised model")
    size = args.example_size if args.dynamic else (args.image_size or (800, 1333))
    config = os.path.abspath(args.config_file)
    if config.startswith(REPO + os.sep):
        config = os.path.relpath(config, REPO)
    try:
        export_onnx(model, args.output, size, dynamic=args.dynamic, opset=args.opset or DEFAULT_OPSET,
                    deform_attn=args.deform_attn, metadata={"codetr.config": config})
    except ValueError as e:  # UnsupportedModelError, a size the model cannot process, a bad opset
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
