#!/usr/bin/env python
"""Evaluate an exported graph (``tools/export_onnx.py``) with ONNX Runtime on the CPU.

    python tools/eval_onnx.py --config-file configs/co_dino/co_dino_r18_shapes.py \\
        --onnx co_dino_shapes.onnx [--threads N] [--max-images N] [key=value ...]

Runs the graph over the config's ``dataloader.test`` (one image at a time: the test mapper's
resized uint8 image, as the PyTorch model receives it), rescales its boxes to each image's
original size as ``detector_postprocess`` does (``codetr.export.onnx_runtime``), and scores them
with the config's ``dataloader.evaluator`` (Detectron2's evaluation loop), printing the results
as ``train_net.py --eval-only`` does. The graph must have been exported with ``--dynamic`` when the
test images differ in size (a fixed-size graph given another size is an error saying so). Its
class count (metadata ``codetr.num_classes``, recorded by ``tools/export_onnx.py``) must equal the
test dataset's: a mismatch is refused (it scores AP 0); a graph without that metadata (exported
before it was recorded) is evaluated with a warning that the count is not checked. Trailing
``key=value`` arguments override the config (LazyConfig syntax), e.g.
``dataloader.test.dataset.names=shapes_val``. The evaluator writes its files
(``coco_instances_results.json``) to its ``output_dir``, in the project's configs
``train.output_dir``: override ``train.output_dir=...`` to keep a training run's files.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, help="LazyConfig file (configs/...)")
    p.add_argument("--onnx", required=True, help="the exported .onnx graph")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--max-images", type=int, default=0,
                   help="evaluate only the first N test images (0: all; for a quick check)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def eval_dataset_classes(cfg):
    """(name, class names or None) of the config's (first) test dataset, from its metadata."""
    from detectron2.data import MetadataCatalog

    names = cfg.dataloader.test.dataset.get("names", None)
    if names is None:
        return None, None
    name = names if isinstance(names, str) else list(names)[0]
    classes = MetadataCatalog.get(name).get("thing_classes", None)
    return name, (list(classes) if classes is not None else None)


def check_graph_for_config(detector, cfg, config_file: str, logger) -> str:
    """The reason the graph cannot be scored on the config's test set ("" if it can): its class
    count differs from the dataset's. Warns when the graph does not record its class count, or
    was exported from a config of another name."""
    name, classes = eval_dataset_classes(cfg)
    exported_from = detector.metadata.get("codetr.config")
    if exported_from and os.path.basename(exported_from) != os.path.basename(config_file):
        logger.warning("the graph was exported from %s, evaluated here with %s", exported_from, config_file)
    if detector.num_classes is None:
        logger.warning(
            "%s has no codetr.num_classes metadata (exported before tools/export_onnx.py recorded it): its class "
            "count is not checked against the test dataset's (%s); a graph of another class count scores AP 0",
            detector.path, f"{len(classes)} classes" if classes is not None else "unknown")
        return ""
    if classes is None:
        logger.warning("the class count of the test dataset %r is unknown: the graph's %d classes are not checked",
                       name, detector.num_classes)
        return ""
    if len(classes) != detector.num_classes:
        return (f"{detector.path} was exported for {detector.num_classes} classes"
                f"{f' (config {exported_from})' if exported_from else ''} but the test dataset {name!r} has "
                f"{len(classes)} ({classes[:10]}{' ...' if len(classes) > 10 else ''}): its detections cannot be "
                "scored on it (AP 0). Evaluate the graph on the dataset it was trained for, or export the model "
                "trained on this one")
    return ""


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.onnx):
        print(f"error: --onnx {args.onnx!r} is not a file", file=sys.stderr)
        return 2
    if args.max_images < 0 or args.threads < 0:
        print(f"error: --max-images ({args.max_images}) and --threads ({args.threads}) must be >= 0",
              file=sys.stderr)
        return 2
    from detectron2.config import LazyConfig, instantiate
    from detectron2.evaluation import inference_on_dataset, print_csv_format
    from detectron2.utils.logger import setup_logger

    from codetr.export.onnx_runtime import GraphInputSizeError, OnnxRuntimeDetector

    setup_logger(name="detectron2")
    setup_logger(name="codetr")
    logger = logging.getLogger("detectron2")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    # the format of the test mapper's images (the project's mappers produce RGB)
    input_format = cfg.dataloader.test.mapper.get("image_format", "RGB")
    try:
        detector = OnnxRuntimeDetector(args.onnx, num_threads=args.threads, input_format=input_format)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger.info("ONNX graph %s, metadata %s", args.onnx, detector.metadata)
    loader = instantiate(cfg.dataloader.test)  # registers a coco_json_dataset: its classes are known after it
    problem = check_graph_for_config(detector, cfg, args.config_file, logger)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.max_images:
        loader = list(itertools.islice(loader, args.max_images))
    evaluator = instantiate(cfg.dataloader.evaluator)
    start = time.perf_counter()
    try:
        results = inference_on_dataset(detector, loader, evaluator)
    except GraphInputSizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger.info("ONNX Runtime evaluation: %.1f s", time.perf_counter() - start)
    print_csv_format(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
