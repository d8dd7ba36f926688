#!/usr/bin/env python
"""Decoder-only training cost of DEQDet's fixed-point loop vs RNNDet's unrolled loop as the number
of refinement steps grows: peak resident memory and time of one training step (forward over
random features, backward) of ``AdaMixerRefiner`` alone (no backbone, neck or loss matching).

    PYTHONPATH=projects python tools/benchmark_refinement_memory.py --loop deq --steps 20
    PYTHONPATH=projects python tools/benchmark_refinement_memory.py --sweep 5 10 20 40

One configuration per process (``--sweep`` starts one child process per loop and step count), so
that peak RSS (``ru_maxrss``) is the configuration's own. DEQDet supervises after the official
positions below the step count and after the last step ((1, 3, 6, 9, 12) + (T,)); RNNDet
supervises every step. The loss is a stand-in (mean sigmoid score + mean |box|).
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def run(loop_name, steps, args):
    from codetr.layers.adaptive_sampling import zero_padding  # noqa: F401  (import check)
    from codetr.modeling.decoders.adamixer import AdaMixerDecoderLayer
    from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement
    from codetr.modeling.decoders.refinement import AdaMixerRefiner
    from codetr.modeling.decoders.xyzr import XYZRCoder
    from codetr.modeling.encoders.output import EncoderOutput

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if loop_name == "deq":
        positions = tuple(p for p in (1, 3, 6, 9, 12) if p < steps) + (steps,)
        loop = FixedPointRefinement(refinement_steps=steps, supervision_positions=positions)
    else:
        loop = UnrolledRefinement(num_steps=steps)
    layers = [AdaMixerDecoderLayer(in_points=args.points) for _ in range(2)]
    refiner = AdaMixerRefiner(layers, 80, loop).train()
    h = w = args.image
    feats = [torch.randn(1, 256, h // s, w // s) for s in (4, 8, 16, 32)]
    masks = [torch.zeros(1, h // s, w // s, dtype=torch.bool) for s in (4, 8, 16, 32)]
    enc = EncoderOutput.from_levels(feats, masks, [torch.zeros_like(f) for f in feats])
    image_wh = torch.tensor([[float(w), float(h)]])
    content = torch.nn.functional.layer_norm(torch.randn(1, args.queries, 256), (256,))
    xyzr = XYZRCoder().from_boxes(torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(1, args.queries, 4), image_wh)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    outputs = refiner(content, xyzr, enc, image_wh)
    loss = sum(p["logits"].sigmoid().mean() + p["boxes"].abs().mean() for _, p in outputs)
    loss.backward()
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(loop=loop_name, steps=steps, supervised=len(outputs), seconds=round(elapsed, 2),
                peak_rss_mib=round(peak / 1024, 1), step_rss_mib=round((peak - base) / 1024, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", choices=["deq", "rnn"], default="deq")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sweep", type=int, nargs="*", help="step counts: run both loops for each, one process each")
    ap.add_argument("--image", type=int, default=512)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--points", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not args.sweep:
        print(json.dumps(run(args.loop, args.steps, args)), flush=True)
        return
    rows = []
    for steps in args.sweep:
        for loop in ("deq", "rnn"):
            cmd = [sys.executable, __file__, "--loop", loop, "--steps", str(steps), "--image", str(args.image),
                   "--queries", str(args.queries), "--points", str(args.points), "--threads", str(args.threads)]
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
