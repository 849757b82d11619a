#!/usr/bin/env python3
"""Compare two `medvae-fast eval --json` summaries (e.g. CPU against CUDA, same weights):
the mean of every metric both have must agree within --tol (relative; PSNR absolute in dB).

Usage: python3 scripts/compare_eval_json.py A.json B.json [--tol 1e-4]
"""
import argparse
import json
import math
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    a, b = (json.load(open(p))["summary"] for p in (args.a, args.b))
    worst = 0.0
    for key in ("psnr", "ssim", "ms_ssim", "l1", "mse"):
        if a.get(key) is None or b.get(key) is None:
            continue
        x, y = a[key]["mean"], b[key]["mean"]
        d = abs(x - y) if key == "psnr" else abs(x - y) / max(abs(y), 1e-12)
        print(f"{key:8} {x:.6f} {y:.6f} diff {d:.2e}")
        worst = max(worst, d if math.isfinite(d) else math.inf)
    if a["samples"] != b["samples"]:
        sys.exit(f"sample counts differ: {a['samples']} vs {b['samples']}")
    print(f"eval summaries agree to {worst:.2e}" if worst <= args.tol else f"differ: {worst:.2e}")
    sys.exit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
