//! NIfTI-1 writing: float32 arrays as single `.nii` / `.nii.gz` files, the way the reference
//! saves its latents (`nib.save(nib.Nifti1Image(array, np.eye(4)), path)`):
//!
//! * the NumPy array's axes become the NIfTI axes in order (`dim = [ndim, shape.., 1..]`), and
//!   element `a[i, j, k]` is voxel `(i, j, k)`: the C-order data is written in NIfTI's
//!   Fortran order (first index fastest), as nibabel does;
//! * datatype float32, little-endian, `vox_offset` 352, every `pixdim` 1;
//! * affine = identity, stored as the sform (`sform_code` 2, "aligned") with `qform_code` 0 —
//!   what nibabel writes for `np.eye(4)`; the source image's orientation is *not* carried over
//!   (neither does the reference). [`write_nifti_with_affine`] stores another affine the same
//!   way, with `pixdim` its column lengths (`infer --source-affine`);
//! * `scl_slope` 1, `scl_inter` 0 (nibabel writes NaN, meaning "unscaled" to nibabel only;
//!   1/0 means the same to every reader).
//!
//! * `descrip` (80 bytes at offset 148, what `fslhd` and nibabel's `header['descrip']` show)
//!   carries a caller's note: `medvae-fast infer` records there which weights and options made
//!   the file, so a later run can tell whether an existing output is its own.
//!
//! Gzip (level 1, as nibabel writes) is chosen by the `.gz` suffix. The file is written to a
//! temporary name beside the target, fsynced and renamed over it
//! ([`crate::checkpoint::write_atomically`]), so neither an interrupted run nor a power loss
//! leaves a truncated latent under its name.

use super::affine::{Affine, IDENTITY_AFFINE};
use super::error::VolumeError;
use super::gather::reverse_axes;
use crate::checkpoint::write_atomically;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::path::Path;

const HEADER_BYTES: usize = 348;
/// Header + the 4-byte extension flag; voxel data starts here.
const DATA_START: usize = 352;
const DT_FLOAT32: i16 = 16;
const SFORM_ALIGNED: i16 = 2;
const DESCRIP_AT: usize = 148;
/// The longest description: 80 bytes with the terminating NUL.
pub const DESCRIP_MAX: usize = 79;

/// The bytes of an uncompressed NIfTI-1 file holding the C-order array `data` of NumPy shape
/// `shape` (1 to 7 axes, each 1..=32767 long) with an identity affine and the description
/// `descrip` (printable ASCII, at most [`DESCRIP_MAX`] bytes).
pub fn nifti_bytes(
    shape: &[usize],
    data: &[f32],
    descrip: &str,
    path: &Path,
) -> Result<Vec<u8>, VolumeError> {
    encode(shape, data, descrip, &IDENTITY_AFFINE, path)
}

fn encode(
    shape: &[usize],
    data: &[f32],
    descrip: &str,
    affine: &Affine,
    path: &Path,
) -> Result<Vec<u8>, VolumeError> {
    if shape.is_empty() || shape.len() > 7 || shape.iter().any(|&d| d == 0 || d > i16::MAX as usize)
    {
        return Err(VolumeError::Dims {
            path: path.to_path_buf(),
            dims: shape.to_vec(),
        });
    }
    let numel = shape.iter().product::<usize>();
    if numel != data.len() {
        return Err(VolumeError::Layout {
            path: path.to_path_buf(),
            msg: format!("{} values for an array of shape {shape:?}", data.len()),
        });
    }
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        return Err(VolumeError::Layout {
            path: path.to_path_buf(),
            msg: format!("value {} at flat index {pos} is not finite", data[pos]),
        });
    }
    if descrip.len() > DESCRIP_MAX || !descrip.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(VolumeError::Layout {
            path: path.to_path_buf(),
            msg: format!(
                "description {descrip:?} is not printable ASCII of at most {DESCRIP_MAX} bytes"
            ),
        });
    }
    if affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err(VolumeError::Layout {
            path: path.to_path_buf(),
            msg: format!("affine {affine:?} has non-finite entries"),
        });
    }
    let mut out = header(shape, affine);
    out[DESCRIP_AT..DESCRIP_AT + descrip.len()].copy_from_slice(descrip.as_bytes());
    out.resize(DATA_START, 0); // extension flag: none
    out.reserve(numel * 4);
    let fortran = reverse_axes(shape, data);
    if cfg!(target_endian = "little") {
        // The values' bytes are already little-endian: one copy.
        out.extend_from_slice(bytemuck::cast_slice(&fortran));
    } else {
        for v in fortran {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// Write `data` (C-order, NumPy shape `shape`) to `path` as NIfTI-1 described by `descrip`;
/// gzip when the name ends in `.gz`. The parent folder must exist.
pub fn write_nifti(
    path: &Path,
    shape: &[usize],
    data: &[f32],
    descrip: &str,
) -> Result<(), VolumeError> {
    write_nifti_with_affine(path, shape, data, descrip, &IDENTITY_AFFINE)
}

/// [`write_nifti`] with the voxel-to-world `affine` (its first three axes are the array's).
pub fn write_nifti_with_affine(
    path: &Path,
    shape: &[usize],
    data: &[f32],
    descrip: &str,
    affine: &Affine,
) -> Result<(), VolumeError> {
    let raw = encode(shape, data, descrip, affine, path)?;
    let io = |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let gz = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".gz"));
    let bytes = if gz {
        // Level 1, nibabel's default for `.nii.gz` (so the reference's files are made the same
        // way): on a 512×512×300 float32 reconstruction it took 1.2 s against level 6's 17 s,
        // for a file 27 % larger.
        let mut enc = GzEncoder::new(Vec::with_capacity(raw.len() / 2), Compression::fast());
        enc.write_all(&raw).map_err(io)?;
        enc.finish().map_err(io)?
    } else {
        raw
    };
    // fsynced before the rename: `--skip-existing` trusts a file whose header is whole, so
    // after a power loss the name must not hold a file whose data never reached the disk.
    write_atomically(path, &bytes).map_err(io)
}

fn header(shape: &[usize], affine: &Affine) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_BYTES];
    let put_i32 = |h: &mut [u8], at: usize, v: i32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put_i16 = |h: &mut [u8], at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut [u8], at: usize, v: f32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, HEADER_BYTES as i32); // sizeof_hdr
    let mut dim = [1i16; 8];
    dim[0] = shape.len() as i16;
    for (d, &s) in dim[1..].iter_mut().zip(shape) {
        *d = s as i16;
    }
    for (n, d) in dim.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * n, *d);
    }
    put_i16(&mut h, 70, DT_FLOAT32); // datatype
    put_i16(&mut h, 72, 32); // bitpix
    for n in 0..8 {
        put_f32(&mut h, 76 + 4 * n, 1.0); // pixdim (qfac = 1, unit spacing)
    }
    // The spatial spacings are the affine's column lengths (as nibabel sets them).
    for col in 0..3.min(shape.len()) {
        let zoom = affine[..3]
            .iter()
            .map(|row| row[col] * row[col])
            .sum::<f64>()
            .sqrt();
        put_f32(&mut h, 80 + 4 * col, zoom as f32);
    }
    put_f32(&mut h, 108, DATA_START as f32); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    put_i16(&mut h, 252, 0); // qform_code: unknown
    put_i16(&mut h, 254, SFORM_ALIGNED); // sform_code

    // srow_x, srow_y, srow_z: the affine's first three rows.
    for (r, row) in affine[..3].iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            put_f32(&mut h, 280 + 16 * r + 4 * c, v as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume3d::read::{decode_nifti, read_nifti};

    #[test]
    fn a_written_volume_reads_back_through_the_reader() {
        let shape = [3usize, 4, 5];
        let data: Vec<f32> = (0..60).map(|v| v as f32 * 0.5 - 7.0).collect();
        let p = Path::new("mem.nii");
        let bytes = nifti_bytes(&shape, &data, "", p).unwrap();
        let vol = decode_nifti(p, &bytes).unwrap();
        assert_eq!(vol.dims, shape);
        // the reader returns the file's order (i fastest): voxel (i, j, k) = a[i, j, k]
        for i in 0..3 {
            for j in 0..4 {
                for k in 0..5 {
                    let want = data[(i * 4 + j) * 5 + k];
                    assert_eq!(vol.data[i + 3 * (j + 4 * k)], want);
                }
            }
        }
        // identity affine
        for r in 0..3 {
            for c in 0..4 {
                assert_eq!(vol.affine[r][c], if r == c { 1.0 } else { 0.0 });
            }
        }

        let dir = std::env::temp_dir().join(format!("medvae-nifti-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gz = dir.join("v.nii.gz");
        write_nifti(&gz, &shape, &data, "").unwrap();
        let raw = std::fs::read(&gz).unwrap();
        assert_eq!(&raw[..2], &[0x1f, 0x8b], "gzip by suffix");
        assert_eq!(read_nifti(&gz).unwrap().data, vol.data);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A written affine is what the reader (nibabel's choice: the aligned sform) finds, with
    /// the spacings as pixdim.
    #[test]
    fn an_affine_reads_back() {
        let dir = std::env::temp_dir().join(format!("medvae-nifti-affine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let affine: Affine = [
            [0.0, -2.0, 0.0, 12.5],
            [0.5, 0.0, 0.0, -3.0],
            [0.0, 0.0, 3.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let path = dir.join("a.nii");
        write_nifti_with_affine(&path, &[2, 3, 4], &[1.0; 24], "", &affine).unwrap();
        assert_eq!(read_nifti(&path).unwrap().affine, affine);
        let bytes = std::fs::read(&path).unwrap();
        let pixdim =
            |n: usize| f32::from_le_bytes(bytes[76 + 4 * n..80 + 4 * n].try_into().unwrap());
        assert_eq!([pixdim(1), pixdim(2), pixdim(3)], [0.5, 2.0, 3.0]);
        let mut bad = affine;
        bad[0][3] = f64::NAN;
        assert!(write_nifti_with_affine(&path, &[2, 3, 4], &[1.0; 24], "", &bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        let p = Path::new("x.nii");
        assert!(nifti_bytes(&[], &[], "", p).is_err());
        assert!(nifti_bytes(&[2, 2], &[0.0; 3], "", p).is_err());
        assert!(nifti_bytes(&[1; 8], &[0.0], "", p).is_err());
        assert!(nifti_bytes(&[2], &[0.0, f32::NAN], "", p).is_err());
        let two_d = nifti_bytes(&[2, 3], &[0.0; 6], "", p).unwrap();
        assert_eq!(i16::from_le_bytes([two_d[40], two_d[41]]), 2);
        assert_eq!(two_d.len(), DATA_START + 24);
        assert!(nifti_bytes(&[2], &[0.0; 2], &"x".repeat(DESCRIP_MAX + 1), p).is_err());
        assert!(nifti_bytes(&[2], &[0.0; 2], "tab\there", p).is_err());
        assert!(nifti_bytes(&[2], &[0.0; 2], &"x".repeat(DESCRIP_MAX), p).is_ok());
    }
}
