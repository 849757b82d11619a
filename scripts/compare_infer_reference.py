#!/usr/bin/env python3
"""Compare `medvae-fast infer` with the reference MedVAE inference on the sample images.

Tiny random MedVAE models (2D 1-channel, 2D 3-channel, 3D) are built with the reference
classes, saved as safetensors, and run on both sides:

* reference: medvae 0.1.7's own pieces, as `MVAE.forward` / `medvae_inference` chain them —
  `load_2d(merge_channels=<1-channel model>)` / `load_mri_3d` / `load_ct_3d`, the model's
  forward, `roi_size_calc` + MONAI `sliding_window_inference(mode="gaussian")` for 3D,
  `.squeeze()`, `nib.save(Nifti1Image(x, eye(4)))`. The posterior mode is used
  (`sample_posterior=False`): the reference's default draws fresh noise on every call, which
  no two runs (of either engine) reproduce; medvae-fast always uses the mode.
  (`MVAE` itself cannot be used offline: its constructor downloads the published weights.)
* medvae-fast: `medvae-fast infer --weights tiny.safetensors --decode` (config from the
  checkpoint's shapes, no --model).

Prints shape, affine and relative errors (max |a-b| / max |ref|) per output; exits 1 if any
shape or affine differs or an error exceeds --tol.

usage: /opt/tb/bin/python scripts/compare_infer_reference.py [--bin target/release/medvae-fast]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from safetensors.torch import save_file

from medvae.models import AutoencoderKL_2D, AutoencoderKL_3D
from medvae.utils.extras import roi_size_calc
from medvae.utils.loaders import load_2d, load_ct_3d, load_mri_3d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ddconfig(in_ch, full=False):
    if full:  # the published medvae_4x1 layout (model_weights/medvae_4x1.yaml)
        return dict(double_z=True, z_channels=1, resolution=384, in_channels=in_ch,
                    out_ch=in_ch, ch=128, ch_mult=[1, 2, 4], num_res_blocks=2,
                    attn_resolutions=[], dropout=0.0)
    return dict(double_z=True, z_channels=4, resolution=64, in_channels=in_ch, out_ch=in_ch,
                ch=32, ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0)


def tiny(cls, in_ch, embed_dim, seed, full=False):
    torch.manual_seed(seed)
    m = cls(ddconfig=ddconfig(in_ch, full), embed_dim=embed_dim).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every parameter matters
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return m


def save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def ref_2d(model, png, merge):
    img = load_2d(png, merge_channels=merge).unsqueeze(0)
    with torch.no_grad():
        dec, _, latent = model(img, sample_posterior=False, decode=True)
    return latent.squeeze().numpy(), dec.squeeze().numpy()


def ref_3d(model, nii, modality, gpu_dim):
    img = (load_ct_3d if modality == "ct" else load_mri_3d)(nii).unsqueeze(0)
    roi = roi_size_calc(img.shape[-3:], target_gpu_dim=gpu_dim)

    def predict(patch):
        dec, _, z = model(patch, sample_posterior=False, decode=True)
        return dec, z

    with torch.no_grad():
        dec, z = sliding_window_inference(img, roi, 1, predict, mode="gaussian")
    return z.squeeze().numpy(), dec.squeeze().numpy(), roi, tuple(img.shape[-3:])


def ours(binary, weights, inp, out_dir, modality, extra=()):
    cmd = [binary, "infer", "-i", inp, "-o", out_dir, "--weights", weights,
           "--modality", modality, "--decode", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"medvae-fast failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    stem = os.path.basename(inp).split(".")[0]
    lat = nib.load(os.path.join(out_dir, stem + ".nii.gz"))
    dec = nib.load(os.path.join(out_dir, stem + "_decoded.nii.gz"))
    return lat, dec


def compare(label, ref, img, tol, failures):
    got = np.asarray(img.dataobj, dtype=np.float32)
    shape_ok = got.shape == ref.shape
    affine_ok = np.array_equal(img.affine, np.eye(4))
    rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12)) if shape_ok else float("nan")
    ok = shape_ok and affine_ok and rel <= tol
    print(f"{'ok ' if ok else 'BAD'} {label:44s} shape {str(ref.shape):16s} "
          f"{'' if shape_ok else f'(ours {got.shape}) '}affine {'eye(4)' if affine_ok else 'DIFFERS'} "
          f"rel.err {rel:.2e}")
    if not ok:
        failures.append(label)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "medvae-fast"))
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--quick", action="store_true", help="skip the slow 720-window 3D case")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        s2d = os.path.join(REPO, "samples", "2d")
        s3d = os.path.join(REPO, "samples", "3d")
        # (input channels, latent channels, full-size medvae_4_1_2d layout, files)
        cases_2d = [
            (1, 3, False, ["mr_slice_u8.png", "ct_slice_u16.png", "mr_slice_rgb.png"]),
            (3, 3, False, ["mr_slice_rgb.png"]),
            (1, 1, True, ["mr_slice_u8.png"]),
        ]
        for in_ch, embed, full, files in cases_2d:
            model = tiny(AutoencoderKL_2D, in_ch, embed, seed=in_ch, full=full)
            kind = "4_1_2d-size" if full else f"tiny {in_ch}c"
            w = os.path.join(tmp, f"model2d_{in_ch}c_{full}.safetensors")
            save(model, w)
            for f in files:
                out = os.path.join(tmp, f"out2d_{in_ch}c_{full}")
                lat, dec = ours(args.bin, w, os.path.join(s2d, f), out, "xray")
                ref_lat, ref_dec = ref_2d(model, os.path.join(s2d, f), merge=in_ch == 1)
                compare(f"2D {kind} {f} latent", ref_lat, lat, args.tol, failures)
                compare(f"2D {kind} {f} decoded", ref_dec, dec, args.tol, failures)

        model = tiny(AutoencoderKL_3D, 1, 1, seed=3)
        w = os.path.join(tmp, "tiny3d.safetensors")
        save(model, w)
        # gpu_dim 20: 3x3x1 overlapping windows; 10: 6-voxel windows that the 4x downsampling
        # does not divide (latent and decoded patches at non-integer scales).
        # The reference needs ~6 min on 2 cores for the 720 windows of the last case.
        cases_3d = [("anatomical_las_i16be.nii", "mri", 20),
                    ("ct_small_vol_lps_i16.nii.gz", "ct", 32),
                    ("ct_small_vol_lps_i16.nii.gz", "ct", 10)]
        for f, modality, gpu_dim in cases_3d[:2] if args.quick else cases_3d:
            out = os.path.join(tmp, "out3d")
            lat, dec = ours(args.bin, w, os.path.join(s3d, f), out, modality,
                            ["--roi-size", str(gpu_dim)])
            ref_z, ref_dec, roi, shape = ref_3d(model, os.path.join(s3d, f), modality, gpu_dim)
            tag = f"3D {f} {shape} roi {roi}"
            compare(f"{tag} latent", ref_z, lat, args.tol, failures)
            compare(f"{tag} decoded", ref_dec, dec, args.tol, failures)
    if failures:
        sys.exit(f"{len(failures)} comparison(s) failed: {', '.join(failures)}")
    print("all outputs match the reference")


if __name__ == "__main__":
    main()
