#!/usr/bin/env python3
"""Baseline for the reconstruction metrics of `medvae-fast eval`: torchmetrics 1.9 on the CPU,
float32 (as a user would call it), on the images of one golden quality case.

Times PSNR, SSIM and (where the case has it) MS-SSIM, all with data_range=(-1, 1), per image;
prints one JSON line. Compare with `medvae-fast verify --golden DIR --filter quality/NAME`
(which computes the same metrics plus SSIM's contrast term, and loads the case) timed as a
whole process, e.g. with farm-bench.

Usage: python scripts/torch_quality_bench.py CASE.safetensors [--threads 2] [--reps 3]
"""
import argparse
import json
import time

import torch
from safetensors.torch import load_file
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure as ms_ssim,
    peak_signal_noise_ratio as psnr,
    structural_similarity_index_measure as ssim,
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t = load_file(a.case)
    p, g = t["in.preds"].float(), t["in.target"].float()
    with_ms = "out.ms_ssim" in t
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        r = [psnr(p, g, data_range=(-1.0, 1.0)), ssim(p, g, data_range=(-1.0, 1.0))]
        if with_ms:
            r.append(ms_ssim(p, g, data_range=(-1.0, 1.0)))
        times.append(time.perf_counter() - t0)
    print(json.dumps({"case": a.case, "shape": list(p.shape), "ms_ssim": with_ms,
                      "seconds_min": min(times), "seconds": times,
                      "values": [float(x) for x in r], "torch": torch.__version__}))


if __name__ == "__main__":
    main()
