#!/usr/bin/env python
"""Time AdaMixer's adaptive 3-d sampling with both implementations of
``codetr.layers.adaptive_sampling.adaptive_sampling_3d``: ``F.grid_sample`` per level vs the
compiled deformable-attention op (every point a query, level weights as attention weights).

    PYTHONPATH=projects python tools/benchmark_adamixer_sampling.py --device cpu --threads 1 \
        --image 512 672 --queries 100 --points 32 64 --iters 5 --warmup 1

Features: a random 4-level pyramid (strides 4..32, C channels) of one ``--image`` (H W) per
batch element; points: random boxes inside the image and random AdaMixer offsets. Reports the
median time of forward and of forward + backward (gradients for features and points) per impl,
and the max abs difference between the two outputs. "ms_deform_attn+flat" passes the pyramid already
flattened (``flat=``, as an AdaMixer layer does with ``EncoderOutput.memory``). Ends with a markdown table.
"""
import argparse
import statistics
import time

import torch

from codetr.layers.adaptive_sampling import adaptive_sampling_3d, sampling_points_3d


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, iters, warmup, device):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    ap.add_argument("--image", type=int, nargs=2, default=[512, 672], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--points", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    strides = (4, 8, 16, 32)
    h, w = args.image
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(args.batch, args.channels, h // s, w // s, generator=g).to(device) for s in strides]
    rows = []
    for p in args.points:
        n, q = args.batch, args.queries
        wh = torch.rand(n, q, 2, generator=g) * torch.tensor([w, h]) * 0.5 + 16
        xy = torch.rand(n, q, 2, generator=g) * torch.tensor([w, h])
        xyzr = torch.cat([xy, wh.log2().mean(-1, keepdim=True), (wh[..., 1:] / wh[..., :1]).log2()], -1)
        offsets = torch.cat([torch.rand(n, q, args.groups, p, 2, generator=g) - 0.5,
                             torch.full((n, q, args.groups, p, 1), -1.0)], -1)
        points = sampling_points_3d(xyzr, offsets).to(device)
        outs = {}
        flat = torch.cat([f.flatten(2) for f in feats], 2).transpose(1, 2).contiguous()
        for label in ("grid_sample", "ms_deform_attn", "ms_deform_attn+flat"):
            impl = label.split("+")[0]
            pre = flat if label.endswith("+flat") else None
            with torch.no_grad():
                outs[label] = adaptive_sampling_3d(feats, strides, points, impl=impl, flat=pre)
                fwd = _time(lambda: adaptive_sampling_3d(feats, strides, points, impl=impl, flat=pre), args.iters,
                            args.warmup, device)
            fl = [f.clone().requires_grad_() for f in feats]
            fl_flat = flat.clone().requires_grad_() if pre is not None else None
            pts = points.clone().requires_grad_()

            def step():
                out = adaptive_sampling_3d(fl, strides, pts, impl=impl, flat=fl_flat)
                torch.autograd.grad(out.sum(), [pts, fl_flat] if fl_flat is not None else [pts, *fl])

            fb = _time(step, args.iters, args.warmup, device)
            rows.append((p, label, fwd * 1e3, fb * 1e3))
            print(f"P={p} {label}: forward {fwd * 1e3:.2f} ms, forward+backward {fb * 1e3:.2f} ms", flush=True)
        diff = (outs["grid_sample"] - outs["ms_deform_attn"]).abs().max().item()
        print(f"P={p}: max |grid_sample - ms_deform_attn| = {diff:.2e}")
    print(f"\n| device | threads | image | N x Q x G x P | impl | forward ms | fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|")
    for p, impl, f, fb in rows:
        print(f"| {args.device} | {args.threads} | {h}x{w} | {args.batch}x{args.queries}x{args.groups}x{p} | {impl} "
              f"| {f:.2f} | {fb:.2f} |")


if __name__ == "__main__":
    main()
