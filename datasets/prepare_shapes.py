#!/usr/bin/env python
"""Generate the bundled synthetic detection dataset ("shapes") in COCO format.

    python datasets/prepare_shapes.py --output datasets/shapes --seed 0 [--num-train 2000 --num-val 200]

Writes ``OUTPUT/shapes_train/{annotations.json,images/}`` and ``OUTPUT/shapes_val/...``; see
``codetr/data/shapes.py`` (the implementation) and ``datasets/README.md`` for what is in it.
A split that already exists with the same seed, size and generator version is kept; anything
else (other parameters, an interrupted run) is regenerated.

Python API (for tests and scripts): ``generate_shapes_dataset(root, num_train, num_val, seed)``.
"""
import argparse
import importlib.util
import os
import sys
import time


def _load_generator():
    """Import codetr/data/shapes.py (numpy + PIL only) without importing the ``codetr.data``
    package, whose import pulls in torch and detectron2 (seconds on a busy machine)."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, os.pardir, "projects", "codetr", "data", "shapes.py")]
    spec = importlib.util.find_spec("codetr")  # locates the package without running its code
    if spec is not None and spec.origin:
        candidates.insert(0, os.path.join(os.path.dirname(spec.origin), "data", "shapes.py"))
    for path in candidates:
        if os.path.isfile(path):
            name = "codetr_shapes_generator"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # worker processes find the rendering function by name
            module_spec.loader.exec_module(module)
            return module
    raise ImportError(f"cannot find codetr/data/shapes.py (looked at {candidates})")


_generator = _load_generator()
generate_shapes_dataset = _generator.generate_shapes_dataset
SHAPE_CLASSES = _generator.SHAPE_CLASSES

__all__ = ["generate_shapes_dataset", "SHAPE_CLASSES", "main"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="dataset folder, e.g. datasets/shapes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default: min(4, CPUs))")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate_shapes_dataset(args.output, args.num_train, args.num_val, seed=args.seed, workers=args.workers)
    for split, paths in out.items():
        print(f"shapes_{split}: {paths['json_file']}  images: {paths['image_root']}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
