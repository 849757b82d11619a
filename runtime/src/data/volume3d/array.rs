//! NIfTI files as plain arrays: any number of axes (1 to 7), NumPy's axis order and C-order
//! data, as `nib.load(path).get_fdata()` hands them to Python, plus the header's `descrip`.
//!
//! This is the reader for arrays that are not scans: latents written by `medvae-fast infer` (or
//! by the reference, through nibabel) that `medvae-fast decode` turns back into images. No
//! reorientation and no intensity rule apply; the affine is ignored. The voxel decoding, the
//! datatype and scaling rules, and every error are [`super::read`]'s.

use super::affine::{best_affine, Affine};
use super::error::VolumeError;
use super::gather::reverse_axes;
use super::nifti2::NIFTI2_HEADER_BYTES;
use super::read::{all_dims, parse_header, read_uncompressed, slope_inter, voxel_values, Element};
use flate2::read::MultiGzDecoder;
use nifti::NiftiHeader;
use std::io::Read;
use std::path::Path;

/// A NIfTI file's array in NumPy order.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiArray {
    /// The file's `dim[1..=dim[0]]`, every axis kept (size-1 ones too).
    pub shape: Vec<usize>,
    /// `shape.product()` values, C order (last axis fastest).
    pub data: Vec<f32>,
    /// The header's description, up to its first NUL.
    pub descrip: String,
    /// For a 3-axis array, the voxel-to-world affine nibabel would choose (sform, qform or
    /// the base affine); `None` for other ranks or an unusable header affine.
    pub affine: Option<Affine>,
}

/// Read a `.nii` / `.nii.gz` file (gzip recognised by its magic bytes) as an array. Errors name
/// the file: unreadable, corrupt gzip, bad header, unsupported datatype, truncated data, or a
/// NaN/Inf value (given by its NumPy index).
pub fn read_nifti_array(path: &Path) -> Result<NiftiArray, VolumeError> {
    decode_nifti_array(path, &read_uncompressed(path)?)
}

/// [`read_nifti_array`] of an uncompressed NIfTI-1 or NIfTI-2 file held in memory (`path` names it in
/// errors).
pub fn decode_nifti_array(path: &Path, bytes: &[u8]) -> Result<NiftiArray, VolumeError> {
    let header = parse_header(path, bytes)?;
    let shape = all_dims(path, &header)?;
    let element = Element::from_code(path, header.datatype)?;
    let scale = slope_inter(path, &header)?;
    let fortran = voxel_values(path, bytes, &header, element, scale, &shape)?;
    // A Fortran-order array of shape S is the C-order array of shape reverse(S), transposed:
    // walking that one with its first axis fastest gives the C order of S.
    let reversed: Vec<usize> = shape.iter().rev().copied().collect();
    let data = reverse_axes(&reversed, &fortran);
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        return Err(VolumeError::Layout {
            path: path.to_path_buf(),
            msg: format!(
                "value {} at index {:?} is not finite",
                data[pos],
                unravel(pos, &shape)
            ),
        });
    }
    let affine = match shape[..] {
        [d0, d1, d2] => best_affine(&header, [d0, d1, d2]).ok(),
        _ => None,
    };
    Ok(NiftiArray {
        shape,
        data,
        descrip: descrip_of(&header),
        affine,
    })
}

/// Only the description of a `.nii` / `.nii.gz` file: the header is read (and, for gzip, only
/// its first bytes decompressed), the voxels are not.
pub fn read_nifti_descrip(path: &Path) -> Result<String, VolumeError> {
    let io = |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    // Enough for either header (NIfTI-1: 348 bytes, NIfTI-2: 540); parse_header tells which.
    let mut head = Vec::with_capacity(NIFTI2_HEADER_BYTES);
    let mut reader = std::io::BufReader::new(file);
    reader.read_exact(&mut magic).map_err(io)?;
    let rest = std::io::Read::chain(&magic[..], reader);
    if magic == [0x1f, 0x8b] {
        MultiGzDecoder::new(rest)
            .take(NIFTI2_HEADER_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| VolumeError::Gzip {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
    } else {
        rest.take(NIFTI2_HEADER_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
    }
    Ok(descrip_of(&parse_header(path, &head)?))
}

fn descrip_of(h: &NiftiHeader) -> String {
    let end = h
        .descrip
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(h.descrip.len());
    String::from_utf8_lossy(&h.descrip[..end]).into_owned()
}

/// The multi-index of C-order position `pos` in `shape`.
fn unravel(mut pos: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in idx.iter_mut().zip(shape).rev() {
        *i = pos % d;
        pos /= d;
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::volume3d::write::{nifti_bytes, write_nifti};

    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("medvae-nifti-array-")
            .tempdir()
            .expect("scratch folder")
    }

    /// Written arrays of every rank come back with their shape, C-order values and description,
    /// gzipped or not.
    #[test]
    fn written_arrays_read_back_whole() {
        let dir = scratch();
        for shape in [vec![5], vec![2, 3], vec![2, 3, 4], vec![3, 1, 2, 2]] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|v| v as f32 * 0.25 - 1.0).collect();
            for name in ["a.nii", "a.nii.gz"] {
                let path = dir.path().join(name);
                write_nifti(&path, &shape, &data, "made by a test").unwrap();
                let back = read_nifti_array(&path).unwrap();
                assert_eq!(back.shape, shape, "{name}");
                assert_eq!(back.data, data, "{name} {shape:?}");
                assert_eq!(back.descrip, "made by a test");
                assert_eq!(read_nifti_descrip(&path).unwrap(), "made by a test");
            }
        }
    }

    /// A truncated file, a corrupt gzip stream and a NaN each name the problem and the file.
    #[test]
    fn bad_files_are_named_errors() {
        let dir = scratch();
        let bytes = nifti_bytes(&[2, 3], &[1.0; 6], "", Path::new("x")).unwrap();
        let short = dir.path().join("short.nii");
        std::fs::write(&short, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_nifti_array(&short).unwrap_err().to_string();
        assert!(e.contains("short.nii") && e.contains("truncated"), "{e}");

        let gz = dir.path().join("bad.nii.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let e = read_nifti_array(&gz).unwrap_err().to_string();
        assert!(e.contains("bad.nii.gz") && e.contains("gzip"), "{e}");
        let e = read_nifti_descrip(&gz).unwrap_err().to_string();
        assert!(e.contains("bad.nii.gz"), "{e}");

        let header_only = dir.path().join("tiny.nii");
        std::fs::write(&header_only, &bytes[..100]).unwrap();
        let e = read_nifti_descrip(&header_only).unwrap_err().to_string();
        assert!(e.contains("shorter than a NIfTI-1 header"), "{e}");

        // a NaN written behind the writer's back, at NumPy index [1, 0] (Fortran position 1)
        let mut with_nan = bytes.clone();
        with_nan[352 + 4..352 + 8].copy_from_slice(&f32::NAN.to_le_bytes());
        let nan = dir.path().join("nan.nii");
        std::fs::write(&nan, &with_nan).unwrap();
        let e = read_nifti_array(&nan).unwrap_err().to_string();
        assert!(e.contains("nan.nii") && e.contains("[1, 0]"), "{e}");
    }

    /// Every prefix of a valid file, and every single-byte change of its header, is read or
    /// refused, never a panic (the fuzz target `decode_image` explores further).
    #[test]
    fn damaged_headers_and_truncations_are_errors_not_panics() {
        let p = Path::new("damaged.nii");
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let bytes = nifti_bytes(&[2, 3, 4], &data, "seed", p).unwrap();
        for end in 0..bytes.len() {
            assert!(
                decode_nifti_array(p, &bytes[..end]).is_err(),
                "prefix {end}"
            );
        }
        for at in 0..352 {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] = value;
                if let Ok(a) = decode_nifti_array(p, &damaged) {
                    assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
                }
            }
        }
    }

    #[test]
    fn unravel_is_c_order() {
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
        assert_eq!(unravel(4, &[2, 3]), vec![1, 1]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
    }
}
