#!/usr/bin/env python
"""Training cost of DEQDet's fixed-point loop vs RNNDet's unrolled loop as the number of
refinement steps grows: peak resident memory and time of one training step.

Default: the decoder alone (``AdaMixerRefiner``, forward over random features and backward; no
backbone, neck or loss matching). ``--detector``: the whole detector (backbone, neck, refiner,
matching, losses, backward) of ``configs/deqdet/deqdet_r18_shapes.py`` / ``rnndet_r18_shapes.py``
with the step count changed, on a fixed batch: the first ``--batch`` images of ``shapes_train``
resized to a short side of 160 (no random augmentation), ``--iters`` forward + backward passes
(no optimiser step), the time being the mean of all but the first.

    PYTHONPATH=projects python tools/benchmark_refinement_memory.py --sweep 5 10 20 40 --detector

    PYTHONPATH=projects python tools/benchmark_refinement_memory.py --loop deq --steps 20
    PYTHONPATH=projects python tools/benchmark_refinement_memory.py --sweep 5 10 20 40

One configuration per process (``--sweep`` starts one child process per loop and step count), so
that peak RSS (``ru_maxrss``) is the configuration's own. DEQDet supervises after the official
positions below the step count and after the last step ((1, 3, 6, 9, 12) + (T,)); RNNDet
supervises every step. The loss is a stand-in (mean sigmoid score + mean |box|).
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


def _deq_positions(steps):
    """DEQDet's supervision positions for T steps: the official ones below T, and T."""
    return tuple(p for p in (1, 3, 6, 9, 12) if p < steps) + (steps,)


def make_loop(loop_name, steps):
    """DEQDet's ``FixedPointRefinement`` (supervised at ``_deq_positions``) or RNNDet's ``UnrolledRefinement``."""
    from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement

    if loop_name == "deq":
        return FixedPointRefinement(refinement_steps=steps, supervision_positions=_deq_positions(steps))
    return UnrolledRefinement(num_steps=steps)


def measure(loop_name, steps, training_step, iters=1):
    """Peak RSS and time of ``iters`` calls of ``training_step() -> number of supervised outputs``;
    the time is the mean of all calls but the first (the one call when ``iters`` is 1)."""
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, outputs = [], 0
    for _ in range(iters):
        t = time.perf_counter()
        outputs = training_step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timed = times[1:] or times
    return dict(loop=loop_name, steps=steps, supervised=outputs, seconds=round(sum(timed) / len(timed), 2),
                peak_rss_mib=round(peak / 1024, 1), step_rss_mib=round((peak - base) / 1024, 1))


def run(loop_name, steps, args):
    """The decoder alone: one forward over random features and backward (see the module docstring)."""
    from codetr.layers.adaptive_sampling import zero_padding  # noqa: F401  (import check)
    from codetr.modeling.decoders.adamixer import AdaMixerDecoderLayer
    from codetr.modeling.decoders.refinement import AdaMixerRefiner
    from codetr.modeling.coders import XYZRCoder
    from codetr.modeling.encoders.output import EncoderOutput
    from codetr.modeling.queries import QueryGroup

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [AdaMixerDecoderLayer(in_points=args.points) for _ in range(2)]
    refiner = AdaMixerRefiner(layers, 80, make_loop(loop_name, steps)).train()
    h = w = args.image
    feats = [torch.randn(1, 256, h // s, w // s) for s in (4, 8, 16, 32)]
    masks = [torch.zeros(1, h // s, w // s, dtype=torch.bool) for s in (4, 8, 16, 32)]
    image_wh = torch.tensor([[float(w), float(h)]])
    enc = EncoderOutput.from_levels(feats, masks, [torch.zeros_like(f) for f in feats], image_wh)
    content = torch.nn.functional.layer_norm(torch.randn(1, args.queries, 256), (256,))
    xyzr = XYZRCoder(image_wh).from_boxes(torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(1, args.queries, 4))

    def training_step():
        out = refiner([QueryGroup(content, xyzr)], enc)
        (out.logits.sigmoid().mean((1, 2, 3)) + out.boxes.abs().mean((1, 2, 3))).sum().backward()
        return len(out.names)

    return measure(loop_name, steps, training_step)


def fixed_batch(num_images):
    """The first ``num_images`` of ``shapes_train`` as training inputs, resized to a short side of 160."""
    from detectron2.data import DatasetMapper, get_detection_dataset_dicts
    from detectron2.data import transforms as T

    dicts = get_detection_dataset_dicts("shapes_train", filter_empty=False)[:num_images]
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(160, max_size=272)],
                           image_format="RGB")
    return [mapper(d) for d in dicts]


def run_detector(loop_name, steps, args):
    """The whole shapes detector's training step (see the module docstring)."""
    from detectron2.config import LazyConfig, instantiate

    import codetr.data  # noqa: F401  (registers the shapes dataset)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = "deqdet" if loop_name == "deq" else "rnndet"
    cfg = LazyConfig.load(os.path.join(REPO, "configs", "deqdet", f"{name}_r18_shapes.py"))
    model = instantiate(cfg.model).train()
    model.decoder.loop = make_loop(loop_name, steps)
    batch = fixed_batch(args.batch)

    def training_step():
        losses = model(batch)
        sum(losses.values()).backward()
        model.zero_grad(set_to_none=True)
        return len([k for k in losses if k.startswith("loss_class")])

    return measure(loop_name, steps, training_step, args.iters)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", choices=["deq", "rnn"], default="deq")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sweep", type=int, nargs="*", help="step counts: run both loops for each, one process each")
    ap.add_argument("--image", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--detector", action="store_true", help="the whole shapes detector instead of the decoder")
    ap.add_argument("--batch", type=int, default=4, help="--detector: images per step")
    ap.add_argument("--iters", type=int, default=3, help="--detector: training steps (the first is not timed)")
    args = ap.parse_args()
    if min(args.steps, args.batch, args.iters) < 1:
        ap.error("--steps, --batch and --iters must be >= 1")
    if not args.sweep:
        print(json.dumps((run_detector if args.detector else run)(args.loop, args.steps, args)), flush=True)
        return
    rows = []
    for steps in args.sweep:
        for loop in ("deq", "rnn"):
            cmd = [sys.executable, __file__, "--loop", loop, "--steps", str(steps), "--image", str(args.image),
                   "--queries", str(args.queries), "--points", str(args.points), "--threads", str(args.threads),
                   "--batch", str(args.batch), "--iters", str(args.iters)] + (["--detector"] if args.detector else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(out, flush=True)
    print("\n| loop | steps | supervised outputs | step time s | peak RSS MiB | RSS growth in the step MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['loop']} | {r['steps']} | {r['supervised']} | {r['seconds']} | {r['peak_rss_mib']} | "
              f"{r['step_rss_mib']} |")


if __name__ == "__main__":
    main()
