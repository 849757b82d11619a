#!/usr/bin/env python3
"""The reference's file side of 3D inference, timed: medvae 0.1.7's `load_ct_3d` (MONAI
LoadImage -> Orientation RAS -> ScaleIntensityRange -> CropForeground) on a CT volume, and
nibabel saving a float32 .nii.gz of the preprocessed shape (what a reconstruction would be).

    torch_volume_io_bench.py --make ct.nii.gz          # write a 512x512x300 int16 CT-like volume (LPS)
    torch_volume_io_bench.py ct.nii.gz [--reps 3]      # time the reference on it; one JSON line

Counterpart of `cargo bench -p medvae-benches --bench volume_io` (scripts/bench_volume_io.sh
runs both). Needs numpy, nibabel, torch, monai and medvae.
"""
import argparse
import json
import os
import tempfile
import time

import nibabel as nib
import numpy as np


def make(path, shape=(512, 512, 300)):
    """An ellipse of soft tissue with a bone ring in air, plus noise, in HU, stored int16 LPS."""
    rng = np.random.default_rng(0)
    nx, ny, nz = shape
    u, v = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    r = (u / 0.8) ** 2 + (v / 0.6) ** 2
    vol = np.empty(shape, np.int16)
    for z in range(nz):
        s = np.full((nx, ny), -1000.0)
        s[r < 0.7] = (40 + 30 * np.sin(6 * u + z / 20) * np.cos(5 * v))[r < 0.7]
        s[(r >= 0.7) & (r < 0.78)] = 700
        vol[:, :, z] = (s + rng.normal(0, 12, s.shape)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([-0.7, -0.7, 1.25, 1.0])), path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("volume")
    ap.add_argument("--make", action="store_true", help="write the test volume to VOLUME and stop")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.make:
        make(a.volume)
        return
    import importlib.util

    import torch

    # medvae's loaders module alone: the package's __init__ imports the whole training stack
    # (einops, wandb, open_clip, ...), which timing a loader does not need.
    root = importlib.util.find_spec("medvae").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("medvae_loaders", os.path.join(root, "utils", "loaders.py"))
    loaders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaders)
    load_ct_3d = loaders.load_ct_3d

    torch.set_num_threads(a.threads)
    load_s, save_s, shape = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.nii.gz")
        for _ in range(a.reps):
            t = time.perf_counter()
            x = load_ct_3d(a.volume)
            load_s.append(time.perf_counter() - t)
            arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32).squeeze())
            shape = list(arr.shape)
            t = time.perf_counter()
            nib.save(nib.Nifti1Image(arr, np.eye(4)), out)
            save_s.append(time.perf_counter() - t)
    print(json.dumps({"engine": "reference", "torch": torch.__version__, "shape": shape,
                      "load_ct_3d_s": load_s, "nib_save_gz_s": save_s}))


if __name__ == "__main__":
    main()
