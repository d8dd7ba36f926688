#!/usr/bin/env python
"""Training-iteration time, peak memory and inference latency of any config, on synthetic data.

    PYTHONPATH=projects python tools/benchmark_model.py --config-file configs/dino/dino_r50_4scale_12ep.py \
        --image-size 512 --batch-size 2 --device cuda --iters 20 --warmup 5 [--compare] [KEY=VALUE ...]

Inputs are random uint8 RGB images of ``--image-size`` x ``--image-size`` with 1-5 random boxes
each (random classes below ``model.num_classes``), in Detectron2's input format, so no dataset is
needed. One training iteration = forward, backward and an optimizer step (the config's
optimizer). Inference runs in eval mode under ``torch.no_grad`` at ``--infer-batch-size``.

``--reference-op`` sets ``use_reference_op=True`` on every ``codetr.layers.MSDeformAttn`` (the
plain-PyTorch ``ms_deform_attn_reference`` instead of the compiled op); ``--compare`` measures
both in one process and adds a ratio row (reference / compiled).

Peak memory:
- CUDA: ``torch.cuda.max_memory_allocated`` over the timed iterations (after
  ``reset_peak_memory_stats``): exact peak of tensor memory, excluding the caching allocator's
  reserve.
- CPU: peak resident set size of the process, sampled every 2 ms by a background thread from
  ``/proc/self/statm``, minus the RSS before the timed iterations. It includes allocator slack,
  and short spikes between samples can be missed; in ``--compare`` mode the second variant may
  reuse memory the first left in the allocator, so compare CPU peaks across separate runs.

The output ends with a markdown table (header + one row per variant) for benchmarks/*.md.
"""
import argparse
import os
import statistics
import sys
import threading
import time
from typing import Dict, List, Optional

import torch

from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def synthetic_batch(batch_size: int, size: int, num_classes: int, gen: torch.Generator, train: bool) -> List[Dict]:
    """Detectron2-format inputs: uint8 (3, size, size) RGB images, 1-5 random xyxy boxes each."""
    batch = []
    for _ in range(batch_size):
        image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
        item = {"image": image, "height": size, "width": size, "file_name": "synthetic", "image_id": 0}
        if train:
            n = int(torch.randint(1, 6, (1,), generator=gen))
            xy = torch.rand(n, 2, generator=gen) * size * 0.7
            wh = (0.08 + torch.rand(n, 2, generator=gen) * 0.22) * size
            instances = Instances((size, size))
            instances.gt_boxes = Boxes(torch.cat([xy, (xy + wh).clamp(max=size)], dim=1))
            instances.gt_classes = torch.randint(0, num_classes, (n,), generator=gen)
            item["instances"] = instances
        batch.append(item)
    return batch


class PeakRSS:
    """Context manager: peak resident set size (bytes) above the value at entry, sampled from
    /proc/self/statm by a daemon thread."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self.rss()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def increase(self) -> int:
        return self.peak - self.base


def set_reference_op(model: torch.nn.Module, flag: bool) -> int:
    """Set ``use_reference_op`` on every codetr MSDeformAttn; returns how many were found."""
    from codetr.layers import MSDeformAttn

    modules = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    for m in modules:
        m.use_reference_op = flag
    return len(modules)


def timed(step, iters: int, warmup: int, device: torch.device):
    """Run ``step`` warmup + iters times; return (seconds per timed call, peak bytes)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(iters):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        return times, torch.cuda.max_memory_allocated(device)
    with PeakRSS() as mem:
        for _ in range(iters):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return times, mem.increase


def benchmark(cfg, args, reference_op: Optional[bool]) -> Dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    if "train" in cfg and cfg.train.get("iters_per_epoch", 0) is None:
        # no dataset here: give schedule-dependent model parts (TOOD's ATSS epochs) a defined
        # value; outside a trainer the iteration is 0, so such a model runs its first phase
        cfg.train.iters_per_epoch = 1
        if cfg.train.get("max_iter", 0) is None:
            cfg.train.max_iter = max(1, int(round(cfg.train.epochs)))
    model = instantiate(cfg.model).to(device)
    found = set_reference_op(model, reference_op) if reference_op is not None else 0
    if reference_op and found == 0:
        print("warning: --reference-op: the model has no codetr.layers.MSDeformAttn module", file=sys.stderr)
    num_classes = model.num_classes  # every codetr detector says it
    gen = torch.Generator().manual_seed(0)
    train_batch = synthetic_batch(args.batch_size, args.image_size, num_classes, gen, train=True)
    infer_batch = synthetic_batch(args.infer_batch_size, args.image_size, num_classes, gen, train=False)

    if "optimizer" in cfg:
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def train_step():
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            losses = model(train_batch)
        loss = sum(v.float() for v in losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    @torch.no_grad()
    def infer_step():
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            model(infer_batch)

    with EventStorage(0):  # Detectron2 models log training statistics to an EventStorage
        model.train()
        train_times, train_mem = timed(train_step, args.iters, args.warmup, device)
        model.eval()
        infer_times, infer_mem = timed(infer_step, args.iters, args.warmup, device)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "op": "-" if reference_op is None else ("reference" if reference_op else "compiled"),
        "train_s": statistics.median(train_times),
        "train_mem": train_mem,
        "infer_ms": statistics.median(infer_times) * 1000 / args.infer_batch_size,
        "infer_mem": infer_mem,
    }


HEADER = (
    "| config | device | image | batch | amp | op | train s/iter | train peak MiB | infer ms/img | infer peak MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def row(args, r) -> str:
    mib = 2**20
    return (
        f"| {os.path.basename(args.config_file)} | {args.device_name} | {args.image_size} | {args.batch_size} | "
        f"{args.amp} | {r['op']} | {r['train_s']:.3f} | {r['train_mem'] / mib:.0f} | {r['infer_ms']:.1f} | "
        f"{r['infer_mem'] / mib:.0f} |"
    )


def ratio_row(args, ref, comp) -> str:
    def ratio(key):
        return f"x{ref[key] / comp[key]:.2f}" if comp[key] else "-"

    return (
        f"| {os.path.basename(args.config_file)} | {args.device_name} | {args.image_size} | {args.batch_size} | "
        f"{args.amp} | reference / compiled | {ratio('train_s')} | {ratio('train_mem')} | {ratio('infer_ms')} | "
        f"{ratio('infer_mem')} |"
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=2, help="training batch size")
    p.add_argument("--infer-batch-size", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--iters", type=int, default=10, help="timed iterations (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", default="off", choices=["off", "fp16", "bf16"])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--reference-op", action="store_true", help="use ms_deform_attn_reference in MSDeformAttn")
    group.add_argument("--compare", action="store_true", help="measure compiled and reference op side by side")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="LazyConfig overrides, KEY=VALUE")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    if min(args.image_size, args.batch_size, args.infer_batch_size, args.iters) < 1 or args.warmup < 0:
        p.error("--image-size, --batch-size, --infer-batch-size, --iters must be >= 1 and --warmup >= 0")
    args.device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    )
    return args


def main(argv=None):
    args = parse_args(argv)
    from codetr.engine import apply_overrides_strict  # unknown keys are errors, as in train_net.py

    cfg = apply_overrides_strict(LazyConfig.load(args.config_file), args.opts)
    if args.compare:
        rows = [benchmark(cfg, args, reference_op=False), benchmark(cfg, args, reference_op=True)]
        lines = [row(args, r) for r in rows] + [ratio_row(args, rows[1], rows[0])]
    else:
        lines = [row(args, benchmark(cfg, args, reference_op=True if args.reference_op else None))]
    print(HEADER)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
