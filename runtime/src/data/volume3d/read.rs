//! NIfTI-1 and NIfTI-2 reading (`.nii`, `.nii.gz`): a NIfTI-1 header through the `nifti`
//! crate, a NIfTI-2 one through [`super::nifti2`] into the same type; voxel bytes decoded here
//! so that every datatype, both byte orders, `scl_slope`/`scl_inter` and every way a file can
//! be short or corrupt are handled explicitly, as nibabel (the reference's reader) does.
//!
//! What nibabel does on load and we mirror:
//! * the header checks it fixes silently: `pixdim[0]` (qfac) not ±1 → 1; `pixdim[1..4]` zero → 1,
//!   negative → absolute value; an unknown `qform_code`/`sform_code` → 0;
//! * `scl_slope` of 0 or non-finite means "no scaling"; a valid slope with a non-finite
//!   intercept is an error;
//! * the voxel data starts at `vox_offset` (0 in a single file means right after the header,
//!   352, or 544 for NIfTI-2); an offset inside the header is an error.

use super::affine::{best_affine, Affine};
use super::error::VolumeError;
use super::nifti2::{nifti2_endianness, parse_nifti2, NIFTI2_DATA_START, NIFTI2_HEADER_BYTES};
use flate2::read::MultiGzDecoder;
use nifti::{Endianness, NiftiHeader};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Size of a NIfTI-1 header on disk, and the first byte after it in a single (`n+1`) file.
pub(super) const HEADER_BYTES: usize = 348;
const SINGLE_FILE_DATA_START: usize = 352;

/// A volume as stored in the file: voxel values after `scl_slope`/`scl_inter`, in the file's own
/// order (Fortran order, `i` fastest), plus the affine nibabel would choose for it.
#[derive(Debug, Clone)]
pub struct NiftiVolume {
    /// Extent along the file's `i`, `j`, `k` axes.
    pub dims: [usize; 3],
    /// `dims[0] * dims[1] * dims[2]` values, `i` fastest.
    pub data: Vec<f32>,
    /// nibabel's `header.get_best_affine()` (sform, else qform, else the base affine).
    pub affine: Affine,
}

/// Read a `.nii` or `.nii.gz` file (gzip is recognised by its magic bytes, not the name).
/// Errors name the file: unreadable, corrupt gzip, bad header, unsupported datatype or
/// dimensions, truncated voxel data, or a NaN/Inf voxel.
pub fn read_nifti(path: &Path) -> Result<NiftiVolume, VolumeError> {
    decode_nifti(path, &read_uncompressed(path)?)
}

/// The bytes of a `.nii` file, or of a `.nii.gz` file after gunzip (by its magic bytes).
pub(super) fn read_uncompressed(path: &Path) -> Result<Vec<u8>, VolumeError> {
    let raw = std::fs::read(path).map_err(|source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        gunzip(path, &raw)
    } else {
        Ok(raw)
    }
}

fn gunzip(path: &Path, raw: &[u8]) -> Result<Vec<u8>, VolumeError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| VolumeError::Gzip {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok(out)
}

/// Decode an uncompressed NIfTI-1 or NIfTI-2 image held in memory (`path` is used in messages).
pub fn decode_nifti(path: &Path, bytes: &[u8]) -> Result<NiftiVolume, VolumeError> {
    let header = parse_header(path, bytes)?;
    let dims = spatial_dims(path, &header)?;
    let element = Element::from_code(path, header.datatype)?;
    let (slope, inter) = slope_inter(path, &header)?;
    let affine = best_affine(&header, dims).map_err(|msg| VolumeError::Affine {
        path: path.to_path_buf(),
        msg,
    })?;
    let data = voxel_values(path, bytes, &header, element, (slope, inter), &dims)?;
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        return Err(non_finite(path, pos, data[pos] as f64, dims));
    }
    Ok(NiftiVolume { dims, data, affine })
}

/// The header of the NIfTI-1 or NIfTI-2 file whose first bytes are `bytes` (at least the 348
/// or 540 of its header), after nibabel's silent fixes. Header-only (`.hdr`/`.img`) files are
/// errors.
pub(super) fn parse_header(path: &Path, bytes: &[u8]) -> Result<NiftiHeader, VolumeError> {
    let header_err = |msg: String| VolumeError::Header {
        path: path.to_path_buf(),
        msg,
    };
    let mut header = if nifti2_endianness(bytes).is_some() {
        parse_nifti2(path, bytes)?
    } else if bytes.len() < HEADER_BYTES {
        return Err(header_err(format!(
            "file is {} bytes, shorter than a NIfTI-1 header ({HEADER_BYTES})",
            bytes.len()
        )));
    } else {
        NiftiHeader::from_reader(bytes).map_err(|e| header_err(e.to_string()))?
    };
    if &header.magic == b"ni1\0" || &header.magic == b"ni2\0" {
        return Err(header_err(
            "a header-only (.hdr/.img pair) file; only single-file .nii/.nii.gz is supported"
                .into(),
        ));
    }
    fix_header_like_nibabel(&mut header);
    Ok(header)
}

/// The `dims.product()` voxel values of the file `bytes` (header `header`), scaled, in the
/// file's order. Values are not checked for NaN/Inf here: the callers name the voxel their way.
pub(super) fn voxel_values(
    path: &Path,
    bytes: &[u8],
    header: &NiftiHeader,
    element: Element,
    (slope, inter): (f64, f64),
    dims: &[usize],
) -> Result<Vec<f32>, VolumeError> {
    let overflow = || VolumeError::Header {
        path: path.to_path_buf(),
        msg: format!("dimensions {dims:?} overflow"),
    };
    let offset = data_offset(path, header)?;
    let voxels = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(overflow)?;
    let needed = voxels.checked_mul(element.size()).ok_or_else(overflow)?;
    let available = bytes.len().saturating_sub(offset);
    if available < needed {
        return Err(VolumeError::Truncated {
            path: path.to_path_buf(),
            offset,
            needed,
            available,
        });
    }
    let body = &bytes[offset..offset + needed];
    let big_endian = header.endianness == Endianness::Big;
    Ok(convert(body, element, big_endian, slope, inter))
}

/// The silent fixes nibabel's `Nifti1Header.check_fix()` applies on load (problem levels below
/// its error level 40); they change which affine is chosen and how it reads.
fn fix_header_like_nibabel(h: &mut NiftiHeader) {
    if h.pixdim[0] != 1.0 && h.pixdim[0] != -1.0 {
        h.pixdim[0] = 1.0;
    }
    for p in &mut h.pixdim[1..4] {
        if *p == 0.0 {
            *p = 1.0;
        } else if *p < 0.0 {
            *p = -*p;
        }
    }
    let valid_code = |c: i16| (0..=5).contains(&c);
    if !valid_code(h.qform_code) {
        h.qform_code = 0;
    }
    if !valid_code(h.sform_code) {
        h.sform_code = 0;
    }
}

/// Every extent, `dim[1..=dim[0]]`: 1 to 7 axes, each positive.
pub(super) fn all_dims(path: &Path, h: &NiftiHeader) -> Result<Vec<usize>, VolumeError> {
    // The `nifti` crate reads dims as u16; NIfTI stores i16, so values above i16::MAX are negative.
    let ndim = h.dim[0] as i16;
    if !(1..=7).contains(&ndim) {
        return Err(VolumeError::Header {
            path: path.to_path_buf(),
            msg: format!("dim[0] = {ndim} is not a number of dimensions in 1..=7"),
        });
    }
    let all: Vec<i16> = h.dim[1..=ndim as usize].iter().map(|&d| d as i16).collect();
    if all.iter().any(|&d| d <= 0) {
        return Err(VolumeError::Header {
            path: path.to_path_buf(),
            msg: format!("dimensions {all:?} include a zero or negative extent"),
        });
    }
    Ok(all.iter().map(|&d| d as usize).collect())
}

/// The three spatial extents. A 4th..7th dimension is accepted only with size 1 (MONAI's
/// EnsureChannelFirst would make it the channel axis; a size above 1 would be several channels).
fn spatial_dims(path: &Path, h: &NiftiHeader) -> Result<[usize; 3], VolumeError> {
    let all = all_dims(path, h)?;
    if all.len() < 3 || all[3..].iter().any(|&d| d != 1) {
        return Err(VolumeError::Dims {
            path: path.to_path_buf(),
            dims: all,
        });
    }
    Ok([all[0], all[1], all[2]])
}

/// nibabel's `get_slope_inter`: slope 0 or non-finite means unscaled.
pub(super) fn slope_inter(path: &Path, h: &NiftiHeader) -> Result<(f64, f64), VolumeError> {
    let slope = h.scl_slope as f64;
    let inter = h.scl_inter as f64;
    if slope == 0.0 || !slope.is_finite() {
        return Ok((1.0, 0.0));
    }
    if !inter.is_finite() {
        return Err(VolumeError::Header {
            path: path.to_path_buf(),
            msg: format!("valid scl_slope {slope} but invalid scl_inter {inter}"),
        });
    }
    Ok((slope, inter))
}

fn data_offset(path: &Path, h: &NiftiHeader) -> Result<usize, VolumeError> {
    let off = h.vox_offset;
    if !off.is_finite() || off < 0.0 {
        return Err(VolumeError::Header {
            path: path.to_path_buf(),
            msg: format!("vox_offset {off} is not a byte offset"),
        });
    }
    let off = off as usize;
    let start = if h.sizeof_hdr == NIFTI2_HEADER_BYTES as i32 {
        NIFTI2_DATA_START
    } else {
        SINGLE_FILE_DATA_START
    };
    if off == 0 {
        return Ok(start);
    }
    if off < start {
        return Err(VolumeError::Header {
            path: path.to_path_buf(),
            msg: format!("vox_offset {off} is inside the header (minimum {start})"),
        });
    }
    Ok(off)
}

/// The voxel datatypes we decode (every real-valued NIfTI-1 type except float128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Element {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Element {
    pub(super) fn from_code(path: &Path, code: i16) -> Result<Self, VolumeError> {
        let unsupported = |name| VolumeError::Datatype {
            path: path.to_path_buf(),
            code,
            name,
        };
        Ok(match code {
            2 => Element::U8,
            4 => Element::I16,
            8 => Element::I32,
            16 => Element::F32,
            64 => Element::F64,
            256 => Element::I8,
            512 => Element::U16,
            768 => Element::U32,
            1024 => Element::I64,
            1280 => Element::U64,
            1 => return Err(unsupported("binary")),
            32 => return Err(unsupported("complex64")),
            128 => return Err(unsupported("rgb24")),
            1536 => return Err(unsupported("float128")),
            1792 => return Err(unsupported("complex128")),
            2048 => return Err(unsupported("complex256")),
            2304 => return Err(unsupported("rgba32")),
            _ => return Err(unsupported("unknown code")),
        })
    }

    fn size(self) -> usize {
        match self {
            Element::U8 | Element::I8 => 1,
            Element::I16 | Element::U16 => 2,
            Element::I32 | Element::U32 | Element::F32 => 4,
            Element::I64 | Element::U64 | Element::F64 => 8,
        }
    }
}

/// Decode `body` to f32 (value = raw · slope + inter, computed in f64 as nibabel does, then
/// rounded once to f32 as MONAI's `LoadImage(dtype=float32)` does).
fn convert(body: &[u8], element: Element, big_endian: bool, slope: f64, inter: f64) -> Vec<f32> {
    macro_rules! decode {
        ($t:ty, $n:expr) => {{
            body.chunks_exact($n)
                .map(|c| {
                    let mut b = [0u8; $n];
                    b.copy_from_slice(c);
                    (if big_endian {
                        <$t>::from_be_bytes(b)
                    } else {
                        <$t>::from_le_bytes(b)
                    }) as f64
                })
                .map(|x| (x * slope + inter) as f32)
                .collect::<Vec<f32>>()
        }};
    }
    match element {
        Element::U8 => decode!(u8, 1),
        Element::I8 => decode!(i8, 1),
        Element::I16 => decode!(i16, 2),
        Element::U16 => decode!(u16, 2),
        Element::I32 => decode!(i32, 4),
        Element::U32 => decode!(u32, 4),
        Element::I64 => decode!(i64, 8),
        Element::U64 => decode!(u64, 8),
        Element::F32 => decode!(f32, 4),
        Element::F64 => decode!(f64, 8),
    }
}

fn non_finite(path: &Path, pos: usize, value: f64, dims: [usize; 3]) -> VolumeError {
    let i = pos % dims[0];
    let j = (pos / dims[0]) % dims[1];
    let k = pos / (dims[0] * dims[1]);
    VolumeError::NonFinite {
        path: PathBuf::from(path),
        voxel: [i, j, k],
        value,
    }
}
