#!/usr/bin/env python3
"""Check `medvae-fast infer --source-affine` against MONAI: the reference's 3D preprocessing
(LoadImage, EnsureChannelFirst, Orientation RAS, ScaleIntensity, Normalize,
CropForeground(k_divisible=16), as `medvae.utils.loaders.load_mri_3d` composes it) tracks the
affine of the volume it returns in its MetaTensor; our reconstruction must carry the same.

    /opt/tb/bin/python scripts/compare_affine_monai.py OUT_DIR IN_FILE [IN_FILE ...]

OUT_DIR holds `<name>_decoded.nii.gz` from `medvae-fast infer -i ... -o OUT_DIR --modality mri
--decode --source-affine`. Prints the largest difference per file; exit 1 above --tol.
"""
import argparse
import pathlib
import sys

import nibabel as nib
import numpy as np
from medvae.utils.loaders import MonaiNormalize
from monai.transforms import (Compose, CropForeground, EnsureChannelFirst, LoadImage,
                              Orientation, ScaleIntensity)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    worst = 0.0
    for path in map(pathlib.Path, args.inputs):
        load = Compose([LoadImage(), EnsureChannelFirst(), Orientation(axcodes="RAS"),
                        ScaleIntensity(channel_wise=True, minv=0, maxv=1),
                        MonaiNormalize(mean=[0.5], std=[0.5]),
                        CropForeground(k_divisible=[16, 16, 16])], lazy=True)
        ref = np.asarray(load(str(path)).affine, dtype=np.float64)
        stem = path.name.split(".nii")[0]
        ours = nib.load(pathlib.Path(args.out_dir) / f"{stem}_decoded.nii.gz").affine
        diff = float(np.abs(ref - ours).max())
        worst = max(worst, diff)
        print(f"{path.name}: largest affine difference {diff:.3g}")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
