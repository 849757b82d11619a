#!/usr/bin/env python3
"""Compare the float32 NIfTI files of two folders (same names): relative L2 error and maximum
absolute difference per file; exit 1 if any file is missing or exceeds --tol.

    python3 scripts/compare_nifti.py DIR_A DIR_B [--tol 1e-4]

Reads .nii and .nii.gz with the standard library and NumPy only (no nibabel), as written by
`medvae-fast infer`: a NIfTI-1 header, vox_offset at byte 108, float32 data (datatype 16).
"""
import argparse
import gzip
import pathlib
import struct
import sys

import numpy as np


def load(path: pathlib.Path) -> np.ndarray:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    if len(raw) < 352:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for a NIfTI-1 header")
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    if datatype != 16:
        raise ValueError(f"{path}: datatype {datatype}, expected 16 (float32)")
    offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    return np.frombuffer(raw[offset:], dtype=endian + "f4").astype(np.float64)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    a_dir, b_dir = pathlib.Path(args.a), pathlib.Path(args.b)
    files = sorted(p for p in a_dir.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        print(f"no NIfTI files in {a_dir}")
        return 1
    worst = 0.0
    for fa in files:
        fb = b_dir / fa.name
        if not fb.exists():
            print(f"MISSING {fb}")
            return 1
        x, y = load(fa), load(fb)
        if x.shape != y.shape:
            print(f"SHAPE {fa.name}: {x.shape} vs {y.shape}")
            return 1
        den = np.linalg.norm(y)
        rel = np.linalg.norm(x - y) / (den if den > 0 else 1.0)
        worst = max(worst, rel)
        print(f"{fa.name:<40} rel err {rel:.2e}  max abs diff {np.abs(x - y).max():.2e}")
    print(f"{len(files)} files, worst rel err {worst:.2e} (tol {args.tol:.0e})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
