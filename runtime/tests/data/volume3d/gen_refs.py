"""Extra 3D preprocessing references for runtime/tests/volume3d.rs.

Small synthetic NIfTI files that exercise what the shared golden files do not: oblique and
permuted sform affines, a qform-only header with qfac -1, a header with neither (nibabel's base
affine), scl_slope/inter, several datatypes in both byte orders, a trailing singleton 4th
dimension, and a CT foreground box that leaves the image. The expected tensors come from the
reference itself: MONAI LoadImage -> EnsureChannelFirst -> Orientation("RAS") -> intensity ->
Normalize(0.5, 0.5) [-> CropForeground(k_divisible=16)], the transform chain of medvae 0.1.7's
loaders (utils/loaders.py), run with MONAI 1.6 / nibabel 5.4.

Run: /opt/tb/bin/python gen_refs.py   (needs monai, nibabel, torch, safetensors)
"""
import gzip
import json
import os

import nibabel as nib
import numpy as np
import torch
from monai.transforms import (Compose, CropForeground, EnsureChannelFirst, LoadImage, Orientation,
                              ScaleIntensity, ScaleIntensityRange)
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20261127)


class Normalize:
    def __call__(self, img):
        return (img - 0.5) / 0.5


def chain(ct, crop):
    t = [LoadImage(), EnsureChannelFirst(), Orientation(axcodes="RAS")]
    t.append(ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True) if ct
             else ScaleIntensity(channel_wise=True, minv=0, maxv=1))
    t.append(Normalize())
    if crop:
        t.append(CropForeground(k_divisible=[16, 16, 16]))
    return Compose(t, lazy=True)


def rot(axis, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def write(name, data, affine=None, sform=True, qform=False, slope=None, inter=None,
          big_endian=False, gz=False):
    hdr = nib.Nifti1Header(endianness='>' if big_endian else '<')
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    if affine is not None:
        hdr.set_sform(affine, code=1 if sform else 0)
        hdr.set_qform(affine, code=1 if qform else 0)
    else:
        hdr.set_sform(np.eye(4), code=0)
        hdr.set_qform(np.eye(4), code=0)
    hdr.set_slope_inter(np.nan, np.nan)
    hdr['vox_offset'] = 352
    # raw bytes by hand, so the stored values and scaling are exactly what is given
    block = bytearray(hdr.binaryblock) + b'\0' * 4
    assert len(block) == 352
    order = '>' if big_endian else '<'
    if slope is not None:
        block[112:120] = np.array([slope, inter], dtype=order + 'f4').tobytes()
    block += data.astype(data.dtype.newbyteorder(order)).tobytes(order='F')
    fname = name + ('.nii.gz' if gz else '.nii')
    with (gzip.open if gz else open)(os.path.join(HERE, fname), 'wb') as f:
        f.write(bytes(block))
    return fname


def blob(shape, dtype, lo, hi):
    # smooth positive blob plus noise, so foreground boxes are not the whole image
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing='ij')
    centre = [0.3, -0.2, 0.1][:len(shape)]
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    v = lo + (hi - lo) * np.exp(-r2 / 0.3) + rng.normal(0, (hi - lo) * 0.02, shape)
    return np.clip(v, lo, hi).astype(dtype)


def case(name, fname, loader, notes):
    ct = loader.startswith('ct')
    for crop in (False, True):
        out = chain(ct, crop)(os.path.join(HERE, fname))
        out = torch.as_tensor(out).float().contiguous()
        tag = 'infer' if crop else 'volume'
        meta = {"file": fname, "modality": "ct" if ct else "mri",
                "steps": ("LoadImage -> EnsureChannelFirst -> Orientation(RAS) -> "
                          + ("ScaleIntensityRange(-1000,1000,0,1,clip)" if ct else "ScaleIntensity(0,1)")
                          + " -> Normalize(0.5,0.5)" + (" -> CropForeground(k_divisible=16)" if crop else "")),
                "notes": notes}
        save_file({"img": out}, os.path.join(HERE, f"{name}__{tag}.safetensors"),
                  metadata={"case": json.dumps(meta)})
        print(name, tag, tuple(out.shape))


def main():
    # 1. oblique sform: 30 deg about z then 20 about x, anisotropic zooms, int16 with slope/inter
    A = np.eye(4)
    A[:3, :3] = rot(2, 30) @ rot(0, 20) @ np.diag([1.5, -2.0, 3.0])
    A[:3, 3] = [10, -20, 5]
    f = write('oblique_sform_i16_scaled', blob((11, 9, 7), np.int16, -200, 3000), A,
              slope=0.5, inter=-40.0)
    case('oblique_sform_i16_scaled', f, 'mri', 'sform_code 1, qform_code 0; scl_slope 0.5, scl_inter -40')

    # 2. permuted axes (i->S, j->L, k->P), int32 big-endian, gzip
    A = np.zeros((4, 4))
    A[2, 0], A[0, 1], A[1, 2], A[3, 3] = 2.0, -1.0, -1.5, 1.0
    f = write('permuted_sla_i32be', blob((6, 10, 8), np.int32, 0, 100000), A, big_endian=True, gz=True)
    case('permuted_sla_i32be', f, 'mri', 'sform: i->S, j->L, k->P; int32 big-endian; gzip')

    # 3. qform only, with qfac -1 (k axis reversed), uint8
    A = np.eye(4)
    A[:3, :3] = rot(1, 10) @ np.diag([1.0, 1.2, -0.8])
    A[:3, 3] = [-3, 4, 5]
    f = write('qform_qfac_neg_u8', blob((8, 7, 9), np.uint8, 0, 255), A, sform=False, qform=True)
    case('qform_qfac_neg_u8', f, 'mri', 'sform_code 0, qform_code 1 with pixdim[0] = -1')

    # 4. no xform codes at all: nibabel's base affine (x flipped), float64
    f = write('no_xform_f64', blob((7, 6, 5), np.float64, -1.0, 4.0), None)
    case('no_xform_f64', f, 'mri', 'sform_code 0, qform_code 0: base affine diag(-dx, dy, dz)')

    # 5. trailing singleton 4th dimension, uint16 little-endian
    A = np.diag([-1.0, -1.0, 1.0, 1.0])
    f = write('four_d_singleton_u16', blob((9, 8, 6), np.uint16, 0, 60000)[..., None], A)
    case('four_d_singleton_u16', f, 'mri', 'dim = [4, 9, 8, 6, 1]: the 4th axis is the channel')

    # 6. CT, int16 big-endian with slope 1 / intercept -1024 (raw = HU + 1024), LPS sform;
    #    the foreground box (HU > 0) grown to 16 leaves the image on every axis (zero padding)
    A = np.diag([-0.7, -0.7, 2.5, 1.0])
    hu = blob((20, 18, 9), np.float64, -1100.0, 1400.0)
    raw = np.round(hu + 1024).astype(np.int16)
    f = write('ct_lps_i16be_intercept', raw, A, slope=1.0, inter=-1024.0, big_endian=True)
    case('ct_lps_i16be_intercept', f, 'ct', 'CT, raw = HU + 1024 stored with scl_inter -1024')

    # 7. float32 with tiny oblique sform whose columns tie nowhere; int8 signed data
    A = np.eye(4)
    A[:3, :3] = rot(0, 44) @ np.diag([1.0, 1.0, 1.0])
    f = write('near45_i8', blob((5, 8, 7), np.int8, -100, 120), A)
    case('near45_i8', f, 'mri', '44 deg about x: j->A and k->S still win, just')


if __name__ == '__main__':
    main()
