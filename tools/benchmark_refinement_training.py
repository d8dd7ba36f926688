#!/usr/bin/env python
"""Training cost of the whole detector (backbone, neck, refiner, matching, losses, backward) of
DEQDet vs RNNDet as the number of refinement steps grows: peak resident memory and step time.

    PYTHONPATH=projects python tools/benchmark_refinement_training.py --sweep 5 10 20 40

One process per (loop, steps), so that peak RSS (``ru_maxrss``) is the configuration's own. The
models are ``configs/deqdet/deqdet_r18_shapes.py`` and ``rnndet_r18_shapes.py`` with the step
count changed: DEQDet ``refinement_steps=T`` with the official supervision positions below T and
T itself ((1, 3, 6, 9, 12) + (T,)); RNNDet ``num_steps=T``, every step supervised. The batch is
fixed: the first ``--batch`` images of ``shapes_train`` resized to a short side of 160 (no random
augmentation), the same in every process. ``--iters`` forward + backward passes (no optimiser
step); the time is the mean of all but the first.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
CONFIGS = {"deq": "configs/deqdet/deqdet_r18_shapes.py", "rnn": "configs/deqdet/rnndet_r18_shapes.py"}


def fixed_batch(num_images):
    from detectron2.data import DatasetMapper, get_detection_dataset_dicts
    from detectron2.data import transforms as T

    dicts = get_detection_dataset_dicts("shapes_train", filter_empty=False)[:num_images]
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(160, max_size=272)],
                           image_format="RGB")
    return [mapper(d) for d in dicts]


def run(loop, steps, args):
    sys.path.insert(0, os.path.join(REPO, "projects"))
    from detectron2.config import LazyConfig, instantiate

    import codetr.data  # noqa: F401  (registers the shapes dataset)
    from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LazyConfig.load(os.path.join(REPO, CONFIGS[loop]))
    model = instantiate(cfg.model).train()
    if loop == "deq":
        positions = tuple(p for p in (1, 3, 6, 9, 12) if p < steps) + (steps,)
        model.decoder.loop = FixedPointRefinement(refinement_steps=steps, supervision_positions=positions)
    else:
        model.decoder.loop = UnrolledRefinement(num_steps=steps)
    batch = fixed_batch(args.batch)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, outputs = [], 0
    for _ in range(args.iters):
        t = time.perf_counter()
        losses = model(batch)
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        outputs = len([k for k in losses if k.startswith("loss_class")])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timed = times[1:] or times
    return dict(loop=loop, steps=steps, supervised=outputs, seconds=round(sum(timed) / len(timed), 2),
                peak_rss_mib=round(peak / 1024, 1), step_rss_mib=round((peak - base) / 1024, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", choices=sorted(CONFIGS), default="deq")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sweep", type=int, nargs="*", help="step counts: run both loops for each, one process each")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.steps < 1 or args.iters < 1 or args.batch < 1:
        ap.error("--steps, --iters and --batch must be >= 1")
    if not args.sweep:
        print(json.dumps(run(args.loop, args.steps, args)), flush=True)
        return
    rows = []
    for steps in args.sweep:
        for loop in ("deq", "rnn"):
            cmd = [sys.executable, __file__, "--loop", loop, "--steps", str(steps), "--batch", str(args.batch),
                   "--iters", str(args.iters), "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(out, flush=True)
    print("\n| loop | steps T | supervised outputs | step time s | peak RSS MiB | RSS growth in the steps MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['loop']} | {r['steps']} | {r['supervised']} | {r['seconds']} | {r['peak_rss_mib']} | "
              f"{r['step_rss_mib']} |")


if __name__ == "__main__":
    main()
