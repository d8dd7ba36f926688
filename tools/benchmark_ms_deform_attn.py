#!/usr/bin/env python
"""Benchmark the compiled multi-scale deformable attention op against the PyTorch reference.

Forward, backward and forward+backward time (median over repeats, after warm-up) and peak memory
of `codetr.layers.ms_deform_attn` and `ms_deform_attn_reference`, side by side in one run, with
ratios. Locations are realistic: a reference grid plus small offsets, not uniform noise.

Cases (8 heads x 32 channels, 4 levels, 4 points):
  encoder_512   a 4-level encoder for a 512x512 image: S = Q = 5440, batch 1
  decoder_512   900 decoder queries over the same value
  encoder_800   (GPU only) the DINO encoder at 800x1333, batch 2: S = Q = 22223

Peak memory: on CUDA, torch.cuda.max_memory_allocated above the inputs; on the CPU, the peak
resident set size (VmHWM, reset through /proc/self/clear_refs) above the resident size before
the call, with glibc's mmap threshold pinned so freed buffers really leave the process.
On GPU the time is also reported as a multiple of the memory-bandwidth floor: compulsory bytes
(read and written once) divided by the measured device copy bandwidth.

Usage: python tools/benchmark_ms_deform_attn.py [--device cpu|cuda] [--dtype float32] [--repeats 5]
"""
import argparse
import os
import platform
import statistics
import sys
import time

if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # make freed CPU buffers visible in RSS
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "layers"))
from ms_deform_attn_cases import level_metadata, realistic_locations  # noqa: E402

from codetr.layers import ms_deform_attn, ms_deform_attn_reference  # noqa: E402

M, D, L, P = 8, 32, 4, 4


def level_shapes(h, w):
    """Feature sizes at strides 8, 16, 32, 64 with ceil rounding (ResNet + stride-2 conv)."""
    shapes = [(-(-h // 8), -(-w // 8))]
    while len(shapes) < L:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


CASES = {
    "encoder_512": dict(image=(512, 512), batch=1, queries=None),
    "decoder_512": dict(image=(512, 512), batch=1, queries=900),
    "encoder_800": dict(image=(800, 1333), batch=2, queries=None, gpu_only=True),
}


def make_case(name, device, dtype):
    spec = CASES[name]
    shapes = level_shapes(*spec["image"])
    spatial_shapes, starts, S = level_metadata(shapes, device)
    N, Q = spec["batch"], spec["queries"] or S
    g = torch.Generator().manual_seed(0)
    value = torch.randn(N, S, M, D, generator=g).to(device=device, dtype=dtype)
    loc = realistic_locations(spatial_shapes.cpu(), N, Q, M, P, device=device)
    attn = torch.rand(N, Q, M, L, P, generator=g).to(device)
    attn = attn / attn.flatten(-2).sum(-1)[..., None, None]
    return value, spatial_shapes, starts, loc, attn


# ----------------------------------------------------------------------------------------- memory
def _rss_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.base = _rss_bytes("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.peak = _rss_bytes("VmHWM") - self.base


# ------------------------------------------------------------------------------------------ timing
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, inputs, mode, device, repeats, warmup=2):
    """Median seconds and peak bytes of one forward / backward / forward+backward call."""
    value, spatial_shapes, starts, loc, attn = inputs
    leaves = [t.detach().requires_grad_(mode != "forward") for t in (value, loc, attn)]
    args = (leaves[0], spatial_shapes, starts, leaves[1], leaves[2])

    def run_once():
        if mode == "forward":
            with torch.no_grad():
                fn(*args)
            return None
        out = fn(*args)
        grad = torch.ones_like(out)
        if mode == "backward":
            _sync(device)
            t0 = time.perf_counter()
            torch.autograd.grad(out, leaves, grad)
            _sync(device)
            return time.perf_counter() - t0
        torch.autograd.grad(out, leaves, grad)
        return None

    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        inner = run_once()
        _sync(device)
        times.append(inner if inner is not None else time.perf_counter() - t0)
    with PeakMemory(device) as mem:
        run_once()
    return statistics.median(times), mem.peak


def copy_bandwidth(device):
    """Measured device copy bandwidth in bytes/s (bytes read + bytes written)."""
    x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    _sync(device)
    return 2 * x.numel() * 10 / (time.perf_counter() - t0)


def compulsory_bytes(inputs, mode):
    value, _, _, loc, attn = inputs
    N, S, M_, D_ = value.shape
    Q = loc.shape[1]
    v, locw = value.numel() * value.element_size(), loc.numel() * 4 + attn.numel() * 4
    out = N * Q * M_ * D_ * value.element_size()
    fwd = v + locw + out
    bwd = v + out + locw + 2 * value.numel() * 4 + locw  # reads + zeroed/written fp32 grad_value + grads
    return {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[mode]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    parser.add_argument("--skip-reference", action="store_true", help="time only the compiled op")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    cases = args.cases or [c for c, spec in CASES.items() if device.type == "cuda" or not spec.get("gpu_only")]

    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
        bandwidth = copy_bandwidth(device)
        print(f"device: {machine}; measured copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        bandwidth = None
        print(f"device: CPU ({machine})")
    print(f"torch {torch.__version__}, dtype {args.dtype}, median of {args.repeats}\n")

    header = "| case | mode | op time | reference time | speed-up | op peak mem | reference peak mem | mem ratio |"
    if bandwidth:
        header += " op / bandwidth floor |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for case in cases:
        inputs = make_case(case, device, dtype)
        for mode in ("forward", "backward", "forward+backward"):
            t_op, m_op = measure(ms_deform_attn, inputs, mode, device, args.repeats)
            if args.skip_reference:
                t_ref = m_ref = float("nan")
            else:
                t_ref, m_ref = measure(ms_deform_attn_reference, inputs, mode, device, args.repeats)
            row = (
                f"| {case} | {mode} | {t_op * 1e3:.2f} ms | {t_ref * 1e3:.2f} ms | {t_ref / t_op:.1f}x | "
                f"{m_op / 2**20:.1f} MiB | {m_ref / 2**20:.1f} MiB | {m_ref / max(m_op, 1):.1f}x |"
            )
            if bandwidth:
                floor = compulsory_bytes(inputs, mode) / bandwidth
                row += f" {t_op / floor:.1f}x ({floor * 1e6:.0f} us floor) |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
