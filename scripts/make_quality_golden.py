#!/usr/bin/env python3
"""Golden cases for the reconstruction metrics of `medvae-fast eval` (torchmetrics 1.9).

Each case holds a batch of real images (from ../shared/data, mapped to [-1, 1]) as `in.target`
and a degraded copy as `in.preds` (blurred, with noise that pushes some values outside
[-1, 1] so that the clamping is exercised), with per-image references computed in float64:
  * out.psnr     peak_signal_noise_ratio(data_range=(-1, 1), reduction none, per image)
  * out.ssim     structural_similarity_index_measure(data_range=(-1, 1), reduction none)
  * out.cs       (images of 11 pixels a side or more) its contrast-structure term (torchmetrics' `_ssim_update(...,
                 return_contrast_sensitivity=True)`), which MS-SSIM multiplies over scales
  * out.ms_ssim  multiscale_structural_similarity_index_measure(data_range=(-1, 1),
                 reduction none, normalize "relu"), for images with every side >= 176

Check them with `medvae-fast verify --golden DIR --filter quality/`.

The small cases go to tests/golden/quality/ (committed). `--full` also writes a 3D MS-SSIM
case on a 176^3 crop of the MNI152 template (43 MB, not committed) to check once by hand.

Usage: python scripts/make_quality_golden.py OUT_DIR [--data ../shared/data] [--full]
"""
import argparse
import json
import os

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure as ms_ssim,
    peak_signal_noise_ratio as psnr,
    structural_similarity_index_measure as ssim,
)
from torchmetrics.functional.image.ssim import _ssim_update

RANGE = (-1.0, 1.0)


def to_unit(a):
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min()) * 2.0 - 1.0


def degrade(target, seed, noise):
    """Blur with a 3-wide box and add noise (values may leave [-1, 1])."""
    g = torch.Generator().manual_seed(seed)
    nd = target.ndim - 2
    c = target.shape[1]
    k = torch.ones((c, 1) + (3,) * nd, dtype=torch.float64) / 3**nd
    conv = F.conv2d if nd == 2 else F.conv3d
    blurred = conv(target, k, padding=1, groups=c)
    return blurred + noise * torch.randn(target.shape, generator=g, dtype=torch.float64)


def references(preds, target, with_ms, dtype=torch.float64, with_cs=True):
    # The inputs are stored as float32: compute from exactly those values.
    p32, t32 = preds.float().to(dtype), target.float().to(dtype)
    out = {
        "out.psnr": psnr(p32, t32, data_range=RANGE, reduction="none",
                         dim=tuple(range(1, p32.ndim))),
        "out.ssim": ssim(p32, t32, data_range=RANGE, reduction="none"),
    }
    # The private helper clamps nothing itself: do what the tuple data range does.
    pc, tc = p32.clamp(*RANGE), t32.clamp(*RANGE)
    if with_cs:
        _, cs = _ssim_update(pc, tc, data_range=RANGE[1] - RANGE[0],
                             return_contrast_sensitivity=True)
        out["out.cs"] = cs
    if with_ms:
        out["out.ms_ssim"] = ms_ssim(p32, t32, data_range=RANGE, reduction="none")
    return out


def write(out_dir, name, target, preds, with_ms, note, dtype=torch.float64, with_cs=True):
    meta = {
        "metric": "quality",
        "data_range": list(RANGE),
        "sigma": 1.5,
        "kernel_size": 11,
        "k1": 0.01,
        "k2": 0.03,
        "reduction": "none (one value per image)",
        "torchmetrics": __import__("torchmetrics").__version__,
        "note": note,
        "reference_dtype": str(dtype).replace("torch.", ""),
    }
    tensors = {"in.target": target.float(), "in.preds": preds.float()}
    for k, v in references(preds, target, with_ms, dtype, with_cs).items():
        tensors[k] = v.float().reshape(-1)
    os.makedirs(os.path.join(out_dir, "quality"), exist_ok=True)
    path = os.path.join(out_dir, "quality", name + ".safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata={"case": json.dumps(meta)})
    print(path, {k: [round(x, 6) for x in v.reshape(-1).tolist()]
                 for k, v in tensors.items() if k.startswith("out.")})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../shared/data"))
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args()
    torch.set_default_dtype(torch.float64)

    def png(name):
        return np.asarray(Image.open(os.path.join(a.data, "2d", name)))

    def vol(name):
        return np.asarray(nib.load(os.path.join(a.data, "3d", name)).dataobj)

    # 2D, one channel: the 16-bit CT slice (128^2), two degradations.
    ct = torch.from_numpy(to_unit(png("ct_slice_u16.png")))[None, None]
    t = ct.repeat(2, 1, 1, 1)
    p = torch.cat([degrade(ct, 1, 0.05), degrade(ct, 2, 0.3)])
    write(a.out, "ct_slice_2d", t, p, False, "CT slice 128x128, blur + noise 0.05 / 0.3")

    # 2D, three channels, non-square crop: the RGB MR slice (64x64 -> 64x50).
    rgb = torch.from_numpy(to_unit(png("mr_slice_rgb.png"))).permute(2, 0, 1)[None, :, :, 7:57]
    write(a.out, "mr_rgb_2d", rgb, degrade(rgb, 3, 0.1), False, "RGB MR slice 64x50, 3 channels")

    # Below the window: 8x9 (SSIM over reflect-padded borders; no contrast term, whose crop
    # is empty and would be NaN).
    tiny = ct[:, :, 60:68, 50:59]
    write(a.out, "tiny_2d", tiny, degrade(tiny, 7, 0.1), False, "CT crop 8x9, under the window",
          with_cs=False)

    # 2D MS-SSIM: an axial slice of the MNI152 template (197x233).
    mni = vol("mni152_t1_ras_u8.nii.gz")
    sl = torch.from_numpy(to_unit(mni[:, :, 80]))[None, None]
    write(a.out, "mni_axial_2d", sl, degrade(sl, 4, 0.1), True,
          "MNI152 axial slice 197x233 (odd sizes: the pooling drops edges)")

    # 3D SSIM: the small CT volume (48x40x24).
    ctv = torch.from_numpy(to_unit(vol("ct_small_vol_lps_i16.nii.gz")))[None, None]
    write(a.out, "ct_volume_3d", ctv, degrade(ctv, 5, 0.1), False, "CT volume 48x40x24")

    if a.full:
        crop = torch.from_numpy(to_unit(mni[10:186, 20:196, 5:181]))[None, None]
        write(a.out, "mni_volume_3d_ms", crop, degrade(crop, 6, 0.1), True,
              "MNI152 crop 176^3: 3D MS-SSIM (large; not committed; float32 reference, "
              "since PyTorch's float64 conv3d on the CPU unfolds to ~290 GB)", torch.float32)


if __name__ == "__main__":
    main()
