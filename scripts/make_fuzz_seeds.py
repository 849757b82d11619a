#!/opt/tb/bin/python
"""Seed corpus for the `decode_image` fuzz target (fuzz/fuzz_targets/decode_image.rs).

Writes into fuzz/corpus/decode_image/ (git-ignored): every sample PNG, and small uncompressed
NIfTI-1 files cut from the real sample volumes with varied datatypes, byte orders, scaling and
qform/sform choices. Small seeds keep each fuzz run fast; the fuzzer grows them as it needs.

    /opt/tb/bin/python scripts/make_fuzz_seeds.py      # needs numpy and nibabel
"""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
OUT = ROOT / "fuzz" / "corpus" / "decode_image"


def write_nifti(name, data, affine, *, dtype, big_endian=False, slope=None, inter=None,
                qform=True, sform=True):
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    hdr = img.header
    if big_endian:
        hdr = hdr.as_byteswapped(">")
        img = nib.Nifti1Image(img.get_fdata().astype(dtype), affine, header=hdr)
    img.set_qform(affine if qform else None, code=1 if qform else 0)
    img.set_sform(affine if sform else None, code=2 if sform else 0)
    path = OUT / name
    nib.save(img, path)
    if slope is not None:
        # nibabel recomputes scaling on save: patch scl_slope / scl_inter (bytes 112..120).
        raw = bytearray(path.read_bytes())
        raw[112:120] = np.array([slope, inter], dtype=(">f4" if big_endian else "<f4")).tobytes()
        path.write_bytes(bytes(raw))
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for png in sorted((SAMPLES / "2d").rglob("*.png")):
        shutil.copy(png, OUT / png.name)
    shutil.copy(SAMPLES / "3d" / "anatomical_las_i16be.nii", OUT / "anatomical_las_i16be.nii")

    ct = nib.load(SAMPLES / "3d" / "ct_small_vol_lps_i16.nii.gz")
    stat = nib.load(SAMPLES / "3d" / "stat_las_f32.nii.gz")
    mni = nib.load(SAMPLES / "3d" / "mni152_t1_ras_u8.nii.gz")
    ct_cut = np.asarray(ct.dataobj)[18:30, 14:24, 9:15]
    stat_cut = np.asarray(stat.dataobj)[20:30, 25:37, 18:26]
    mni_cut = np.asarray(mni.dataobj)[90:98, 110:118, 90:98]

    write_nifti("ct_lps_i16.nii", ct_cut, ct.affine, dtype=np.int16)
    write_nifti("ct_lps_i16_be_scaled.nii", ct_cut, ct.affine, dtype=np.int16, big_endian=True,
                slope=2.0, inter=-5.0)
    write_nifti("stat_las_f32_qform_only.nii", stat_cut, stat.affine, dtype=np.float32,
                sform=False)
    write_nifti("stat_las_f64_sform_only.nii", stat_cut, stat.affine, dtype=np.float64,
                qform=False)
    write_nifti("mni_ras_u8_no_affine.nii", mni_cut, mni.affine, dtype=np.uint8, qform=False,
                sform=False)
    write_nifti("mni_ras_u16.nii", mni_cut, mni.affine, dtype=np.uint16)
    write_nifti("mni_ras_i8.nii", mni_cut // 2, mni.affine, dtype=np.int8)


if __name__ == "__main__":
    main()
