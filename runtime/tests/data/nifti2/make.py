"""Write NIfTI-2 copies of two bundled NIfTI-1 samples with nibabel, for the reader's tests.

    python3 runtime/tests/data/nifti2/make.py      # needs nibabel (pip install nibabel)

* runtime/tests/data/nifti2/anatomical_las_i16be_n2.nii: the real T1 MRI as a big-endian NIfTI-2
  file with scl_slope 0.5 / scl_inter -10 (stored integers unchanged, so the values read are
  the original's * 0.5 - 10) and a comment extension (so the voxels start after byte 544, at 576).
* runtime/tests/data/nifti2/ct_small_vol_lps_i16_n2.nii.gz: the CT volume as a little-endian,
  gzipped NIfTI-2 file, otherwise as the original (sform only, negative x/y spacing).

Deterministic: the same nibabel writes the same bytes.
"""
import gzip
import io
from pathlib import Path

import nibabel as nib

ROOT = Path(__file__).resolve().parents[4]
SRC = ROOT / "samples" / "3d"
OUT = ROOT / "runtime" / "tests" / "data" / "nifti2"


def nifti2_of(path, endian, slope_inter=None, comment=None):
    img = nib.load(path)
    raw = img.dataobj.get_unscaled()
    header = nib.Nifti2Header.from_header(img.header)
    header = header if endian == "<" else header.as_byteswapped(">")
    header.set_data_dtype(raw.dtype.newbyteorder(endian))
    out = nib.Nifti2Image(raw, img.affine, header=header)
    out.header.set_qform(*img.header.get_qform(coded=True))
    out.header.set_sform(*img.header.get_sform(coded=True))
    if slope_inter is not None:
        out.header.set_slope_inter(*slope_inter)
    if comment is not None:
        out.header.extensions.append(nib.nifti1.Nifti1Extension("comment", comment))
    return out


def write(img, path, gz):
    # Written through to_bytes so that no time stamp enters a gzip header.
    data = img.to_bytes()
    if gz:
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as f:
            f.write(data)
        data = buf.getvalue()
    path.write_bytes(data)
    back = nib.load(path)
    proxy = back.dataobj
    print(path.relative_to(ROOT), back.header.sizeof_hdr, back.shape, back.header.get_data_dtype(),
          "offset", proxy.offset, "slope", proxy.slope, "inter", proxy.inter)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    anat = nifti2_of(SRC / "anatomical_las_i16be.nii", ">", (0.5, -10.0), b"medvae-fast test")
    write(anat, OUT / "anatomical_las_i16be_n2.nii", gz=False)
    ct = nifti2_of(SRC / "ct_small_vol_lps_i16.nii.gz", "<")
    write(ct, OUT / "ct_small_vol_lps_i16_n2.nii.gz", gz=True)


if __name__ == "__main__":
    main()
