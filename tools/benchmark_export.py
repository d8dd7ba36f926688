#!/usr/bin/env python
"""Batch-1 CPU inference latency and peak memory of one detector, side by side:
ONNX Runtime vs PyTorch eager (compiled op) vs PyTorch with the reference op vs torch.compile.

    PYTHONPATH=projects python tools/benchmark_export.py --config-file configs/dino/dino_r50_4scale_12ep.py \\
        --image-size 800 1333 --iters 3 --threads 1 [--modes eager reference compile onnxruntime] \\
        [--onnx dino.onnx] [--markdown out.md]

Every mode runs the same tensor-in tensor-out module, ``codetr.export.exportable(model)`` (the
graph that is exported: preprocessing, backbone, encoder, decoder, top-k), on one random uint8
image, with randomly initialised weights (latency does not depend on them):

- ``eager``: PyTorch, ``codetr::ms_deform_attn`` (the C++ CPU kernel);
- ``reference``: PyTorch, ``ms_deform_attn_reference`` (grid_sample per level) in every
  ``MSDeformAttn`` (``use_reference_op=True``);
- ``compile``: ``torch.compile`` (inductor) of the same module; the first call's compile time
  is reported apart;
- ``onnxruntime`` / ``onnxruntime_gather``: the graph exported by ``export_onnx`` (fixed size;
  the GridSample / the gather form of the op; exported first, by a process of its own),
  ``CPUExecutionProvider`` (``--device cuda``:
  ``CUDAExecutionProvider``, which needs the ``onnxruntime-gpu`` package); export and session
  creation are reported apart (with the export's peak RSS).

Each mode runs in its own subprocess, so that "peak RSS" (``ru_maxrss`` of that process: model,
weights, and everything the mode allocated, including compilation) is its own. Threads: torch
and ONNX Runtime intra-op threads = ``--threads``. ``--device cuda`` adds the peak CUDA memory
(``max_memory_allocated``). The output ends with a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))

MODES = ("eager", "reference", "compile", "onnxruntime", "onnxruntime_gather")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--image-size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    p.add_argument("--iters", type=int, default=3, help="timed iterations per mode (after one warm-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: PyTorch modes on the GPU, ONNX Runtime with CUDAExecutionProvider when installed")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--onnx", default="", help="where to keep the exported graph (default: a temporary file)")
    p.add_argument("--markdown", default="", help="also write the table to this file")
    # internal: run one mode (or one export) and print its figures as JSON
    p.add_argument("--run-mode", choices=MODES + ("export", "export_gather"), help=argparse.SUPPRESS)
    p.add_argument("--save-outputs", default="", help=argparse.SUPPRESS)  # internal: detections as .npz
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    return p


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _time(fn, iters: int, sync) -> List[float]:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _onnx_path(args) -> str:
    """Where the ONNX graph of the ``onnxruntime`` / ``onnxruntime_gather`` modes is written."""
    gather = args.run_mode.endswith("gather")
    return os.path.splitext(args.onnx)[0] + ("_gather.onnx" if gather else ".onnx")


def run_mode(args) -> Dict:
    import torch
    from detectron2.config import LazyConfig, instantiate

    from codetr.export import exportable
    from codetr.layers import MSDeformAttn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = args.image_size
    image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    onnxruntime_mode = args.run_mode.startswith("onnxruntime")
    if not onnxruntime_mode:  # ONNX Runtime runs the graph alone (no PyTorch model in its memory)
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
        model = instantiate(cfg.model).cpu().eval()
    if args.run_mode.startswith("export"):
        from codetr.export.onnx_export import export_onnx

        start = time.perf_counter()
        form = "gather" if args.run_mode == "export_gather" else "grid_sample"
        export_onnx(model, _onnx_path(args), (h, w), deform_attn=form)
        return {"mode": args.run_mode, "export s": time.perf_counter() - start, "peak_rss_mib": _peak_rss_mib()}
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if not onnxruntime_mode:
        adapter = exportable(model)
        if cuda:
            adapter, image = adapter.cuda(), image.cuda()
    extra: Dict[str, float] = {}
    if args.run_mode == "reference":
        for m in model.modules():
            if isinstance(m, MSDeformAttn):
                m.use_reference_op = True
    if args.run_mode in ("eager", "reference"):
        def fn():
            with torch.no_grad():
                return adapter(image)
    elif args.run_mode == "compile":
        compiled = torch.compile(adapter, backend="inductor")
        start = time.perf_counter()
        with torch.no_grad():
            compiled(image)
        extra["first call (compile) s"] = time.perf_counter() - start

        def fn():
            with torch.no_grad():
                return compiled(image)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
        if provider not in ort.get_available_providers():
            raise RuntimeError(f"onnxruntime has no {provider} (providers: {ort.get_available_providers()})")
        start = time.perf_counter()
        session = ort.InferenceSession(_onnx_path(args), options, providers=[provider])
        extra["session s"] = time.perf_counter() - start
        feed = {"image": image.numpy()}

        def fn():
            return session.run(None, feed)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = _time(fn, args.iters, sync)
    out = [o.detach().cpu().numpy() if hasattr(o, "detach") else o for o in fn()]
    num = len(out[2])
    if args.save_outputs:
        import numpy as np

        np.savez(args.save_outputs, labels=out[0], boxes=out[1], scores=out[2])
    if cuda:
        extra["peak CUDA MiB"] = torch.cuda.max_memory_allocated() / 2**20
    return {"mode": args.run_mode, "times": times, "peak_rss_mib": _peak_rss_mib(), "detections": num, **extra}


def _parity(outputs_dir: str, mode: str) -> str:
    """The detections of ``mode`` against eager's: how many have a twin in eager's (same label,
    box within 1e-2 px, score within 1e-4; the order of equal scores may differ), and the
    largest gap between the two sorted score lists."""
    import numpy as np

    a, b = (np.load(os.path.join(outputs_dir, f"{m}.npz")) for m in (mode, "eager"))
    if a["labels"].shape != b["labels"].shape:
        return f"{len(a['labels'])} vs {len(b['labels'])} detections"
    twin = ((a["labels"][:, None] == b["labels"][None])
            & (np.abs(a["boxes"][:, None] - b["boxes"][None]).max(-1) <= 1e-2)
            & (np.abs(a["scores"][:, None] - b["scores"][None]) <= 1e-4)).any(1)
    gap = np.abs(np.sort(a["scores"]) - np.sort(b["scores"])).max()
    return f"{int(twin.sum())}/{len(twin)} matched, sorted scores within {gap:.1e}"


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_mode:
        print("RESULT " + json.dumps(run_mode(args)))
        return 0
    results = []
    outputs_dir = tempfile.mkdtemp()
    args.onnx = args.onnx or os.path.join(outputs_dir, "model.onnx")
    exported = {}
    for mode in args.modes:
        if mode.startswith("onnxruntime"):  # export first, in a process of its own
            export = mode.replace("onnxruntime", "export")
            cmd = [sys.executable, os.path.abspath(__file__), "--run-mode", export, "--config-file", args.config_file,
                   "--image-size", *map(str, args.image_size), "--onnx", args.onnx] + args.opts
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(f"{export}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
                results.append({"mode": mode, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "?"})
                continue
            exported[mode] = json.loads(lines[-1][len("RESULT "):])
            print(f"{export}: {exported[mode]}", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--run-mode", mode, "--config-file", args.config_file,
               "--save-outputs", os.path.join(outputs_dir, f"{mode}.npz"),
               "--image-size", *map(str, args.image_size), "--iters", str(args.iters), "--threads", str(args.threads),
               "--device", args.device, "--onnx", args.onnx] + args.opts
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{mode}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", file=sys.stderr)
            results.append({"mode": mode, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "?"})
            continue
        results.append(json.loads(lines[-1][len("RESULT "):]))
        if mode in exported:
            results[-1]["export s"] = exported[mode]["export s"]
            results[-1]["export peak RSS MiB"] = exported[mode]["peak_rss_mib"]
        print(f"{mode}: {results[-1]}", flush=True)
    eager = next((r for r in results if r["mode"] == "eager" and "times" in r), None)
    base = statistics.median(eager["times"]) if eager else None
    for r in results:
        r["parity"] = _parity(outputs_dir, r["mode"]) if eager and "times" in r else "-"
    rows = [
        f"| mode | median s/image ({args.iters} iters) | min s | vs eager | peak RSS MiB | detections "
        "| vs eager's detections | other |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if "times" not in r:
            rows.append(f"| {r['mode']} | failed: {r['error'][:120]} | | | | | | |")
            continue
        med = statistics.median(r["times"])
        ratio = f"{med / base:.2f}x" if base else "-"
        other = ", ".join(f"{k} {v:.1f}" for k, v in r.items() if k.endswith((" s", " MiB")) and k != "peak_rss_mib")
        rows.append(f"| {r['mode']} | {med:.2f} | {min(r['times']):.2f} | {ratio} | {r['peak_rss_mib']:.0f} | "
                    f"{r['detections']} | {r['parity']} | {other} |")
    table = "\n".join(rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return 0 if all("times" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
