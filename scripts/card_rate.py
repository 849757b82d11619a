"""The card's dense BF16 tensor-core rate as cuBLAS reaches it (torch.matmul, n x n x n), the
reference of issue #7's first target: our convolution GEMMs at >= 45 % of this rate.

usage: python3 scripts/card_rate.py [--n 8192] [--reps 20]
Prints one JSON line: {"device", "n", "reps", "median_ms", "bf16_gemm_tflops"}.
"""
import argparse
import json
import statistics

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("card_rate.py: no CUDA device")
    n = args.n
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):  # warm-up: cuBLAS picks its kernel, clocks rise
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(args.reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    print(json.dumps({
        "device": torch.cuda.get_device_name(),
        "n": n,
        "reps": args.reps,
        "median_ms": round(ms, 4),
        "bf16_gemm_tflops": round(2 * n**3 / (ms / 1e3) / 1e12, 1),
    }))


if __name__ == "__main__":
    main()
