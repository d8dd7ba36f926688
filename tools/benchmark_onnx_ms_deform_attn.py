#!/usr/bin/env python
"""The two ONNX forms of ``codetr::ms_deform_attn`` in ONNX Runtime (CPU) against the C++ op and
the PyTorch reference, at DINO's shapes, interleaved (round-robin) so that a busy machine slows
every variant alike.

    PYTHONPATH=projects python tools/benchmark_onnx_ms_deform_attn.py [--image 800 1333] [--queries 0]
        [--repeats 5] [--threads 1]

Value (1, S, 8, 32) on the 4 levels of an image (strides 8..64), realistic sampling locations
(tests/layers/ms_deform_attn_cases.py), 4 points; ``--queries 0``: the encoder (Q = S), else
that many decoder queries. Each ONNX graph holds the op alone, exported with
``codetr.export.onnx_ops`` (dynamic sizes, as in a detector's graph). Prints median seconds per
call and the maximum difference to the reference.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "projects"))
sys.path.insert(0, os.path.join(ROOT, "tests", "layers"))
from ms_deform_attn_cases import level_metadata, realistic_locations  # noqa: E402

from codetr.layers.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference  # noqa: E402

M, D, L, P = 8, 32, 4, 4


class Op(torch.nn.Module):
    def forward(self, value, spatial_shapes, level_start_index, locations, weights):
        return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=int, nargs=2, default=(800, 1333))
    p.add_argument("--queries", type=int, default=0, help="0: encoder (Q = S)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import onnxruntime as ort

    from codetr.export.onnx_ops import ms_deform_attn_translation

    torch.set_num_threads(args.threads)
    h, w = args.image
    shapes = [(-(-h // 8), -(-w // 8))]
    while len(shapes) < L:
        shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    spatial_shapes, starts, S = level_metadata(shapes)
    Q = args.queries or S
    g = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, S, M, D, generator=g), spatial_shapes, starts,
              realistic_locations(spatial_shapes, 1, Q, M, P), torch.rand(1, Q, M, L, P, generator=g))
    names = ["value", "spatial_shapes", "level_start_index", "locations", "weights"]
    feed = {n: t.numpy() for n, t in zip(names, inputs)}
    with torch.no_grad():
        expected = ms_deform_attn_reference(*inputs).numpy()
    variants = {
        "C++ op (torch)": lambda: ms_deform_attn(*inputs),
        "reference (torch)": lambda: ms_deform_attn_reference(*inputs),
    }
    errors = {}
    tmp = tempfile.mkdtemp()
    for form in ("grid_sample", "gather"):
        path = os.path.join(tmp, f"{form}.onnx")
        dyn = {"value": {1: "S"}, "spatial_shapes": None, "level_start_index": None,
               "locations": {1: "Q"}, "weights": {1: "Q"}}
        torch.onnx.export(Op(), inputs, path, dynamo=True, opset_version=19, input_names=names, dynamic_shapes=dyn,
                          custom_translation_table={torch.ops.codetr.ms_deform_attn.default:
                                                    ms_deform_attn_translation(form, 19)},
                          optimize=False, verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        errors[f"ONNX Runtime, {form}"] = float(np.abs(session.run(None, feed)[0] - expected).max())
        variants[f"ONNX Runtime, {form}"] = lambda s=session: s.run(None, feed)
    times = {name: [] for name in variants}
    with torch.no_grad():
        for fn in variants.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    print(f"levels {shapes}, S = {S}, Q = {Q}, {M} heads x {D} channels, {P} points, {args.threads} thread(s), "
          f"{args.repeats} interleaved repeats")
    print("| variant | median ms | min ms | max abs diff to the reference |")
    print("| --- | --- | --- | --- |")
    for name, ts in times.items():
        err = f"{errors[name]:.1e}" if name in errors else "-"
        print(f"| {name} | {1e3 * statistics.median(ts):.0f} | {1e3 * min(ts):.0f} | {err} |")


if __name__ == "__main__":
    main()
