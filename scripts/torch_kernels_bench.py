#!/usr/bin/env python3
"""PyTorch CPU baseline for the kernel benches (scripts/bench-kernels.sh).

Times, at a fixed thread count (default 2), on a 1x128x128x128 f32 activation:
  * conv3x3_128/forward  : Conv2d(128, 128, 3, padding=1) forward;
  * conv3x3_128/fwd_bwd  : forward + backward to input, weight and bias;
  * conv3x3s2_128/...    : F.pad (0,1,0,1) + Conv2d(128, 128, 3, stride=2) (encoder downsample);
  * gn_silu_128/forward and fwd_bwd: GroupNorm(32, 128, eps=1e-6) + SiLU.
Both memory formats are timed for the convolutions (channels_last is what medvae-fast uses;
contiguous NCHW is PyTorch's default). Prints one JSON line per measurement with the median
and min wall time and the median process CPU time (all threads), in ms.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def measure(fn, warmup, iters):
    """Median and min wall time, and median process CPU time (all threads), in ms."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(iters):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def emit(name, fn, args, **extra):
    med, best, cpu = measure(fn, args.warmup, args.iters)
    rec = {"bench": name, "median_ms": round(med, 3), "min_ms": round(best, 3),
           "cpu_median_ms": round(cpu, 3),
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def conv_benches(args, group, stride, pre_pad):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(128, 128, 3, stride=stride, padding=0 if pre_pad else 1)
    for fmt_name, fmt in (("channels_last", torch.channels_last),
                          ("nchw", torch.contiguous_format)):
        m = conv.to(memory_format=fmt)
        x = torch.randn(1, 128, 128, 128).to(memory_format=fmt).requires_grad_(True)

        def fwd_only():
            with torch.no_grad():
                xi = F.pad(x, pre_pad) if pre_pad else x
                return m(xi)

        y = fwd_only()
        gy = torch.randn_like(y).to(memory_format=fmt)

        def fwd_bwd():
            xi = F.pad(x, pre_pad) if pre_pad else x
            out = m(xi)
            x.grad = None
            m.weight.grad = None
            m.bias.grad = None
            out.backward(gy)

        emit(f"{group}/forward", fwd_only, args, memory_format=fmt_name)
        emit(f"{group}/fwd_bwd", fwd_bwd, args, memory_format=fmt_name)


def gn_silu_benches(args):
    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(32, 128, eps=1e-6)
    for fmt_name, fmt in (("channels_last", torch.channels_last),
                          ("nchw", torch.contiguous_format)):
        x = torch.randn(1, 128, 128, 128).to(memory_format=fmt).requires_grad_(True)
        gy = torch.randn(1, 128, 128, 128).to(memory_format=fmt)

        def fwd_only():
            with torch.no_grad():
                return F.silu(gn(x))

        def fwd_bwd():
            out = F.silu(gn(x))
            x.grad = None
            gn.weight.grad = None
            gn.bias.grad = None
            out.backward(gy)

        emit("gn_silu_128/forward", fwd_only, args, memory_format=fmt_name)
        emit("gn_silu_128/fwd_bwd", fwd_bwd, args, memory_format=fmt_name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=11)
    ap.add_argument("--only", choices=["conv", "gn_silu"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.only in (None, "conv"):
        conv_benches(args, "conv3x3_128", 1, None)
        conv_benches(args, "conv3x3s2_128", 2, (0, 1, 0, 1))
    if args.only in (None, "gn_silu"):
        gn_silu_benches(args)


if __name__ == "__main__":
    main()
