//! NIfTI-2 headers (540 bytes: 64-bit dimensions and offsets, double-precision geometry),
//! which nibabel, and so the reference's MONAI loader, reads like NIfTI-1. FSL
//! (`FSLOUTPUTTYPE=NIFTI2_GZ`), AFNI and Connectome Workbench write them.
//!
//! The header is read into the `nifti` crate's NIfTI-1 header type, so that every later step
//! (datatypes, scaling, affines, nibabel's silent fixes) is the NIfTI-1 code. What does not
//! fit that type is an error, never a silent change: an axis longer than 32767 voxels, a
//! voxel offset beyond 16 MiB. The geometry (`pixdim`, quaternion, `srow`) and `scl_*` are
//! rounded from double to single precision (relative change ≤ 6e-8).

use super::error::VolumeError;
use nifti::{Endianness, NiftiHeader};
use std::path::Path;

/// `sizeof_hdr` of a NIfTI-2 header, and its size on disk.
pub(super) const NIFTI2_HEADER_BYTES: usize = 540;
/// The first voxel byte of a single NIfTI-2 file without extensions (header + 4 bytes).
pub(super) const NIFTI2_DATA_START: usize = 544;
/// What `eol_check` holds (a guard against files mangled by a text-mode transfer).
const EOL_CHECK: [u8; 4] = [13, 10, 26, 10];
/// The largest voxel offset the single-precision `vox_offset` field keeps exactly.
const MAX_VOX_OFFSET: i64 = 1 << 24;

/// The byte order of a NIfTI-2 header (its `sizeof_hdr` is 540 in one order), or `None`.
pub(super) fn nifti2_endianness(bytes: &[u8]) -> Option<Endianness> {
    let first: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    if i32::from_le_bytes(first) == NIFTI2_HEADER_BYTES as i32 {
        Some(Endianness::Little)
    } else if i32::from_be_bytes(first) == NIFTI2_HEADER_BYTES as i32 {
        Some(Endianness::Big)
    } else {
        None
    }
}

/// Fixed-position fields in the header's byte order.
struct Fields<'a> {
    bytes: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn take<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&self.bytes[at..at + N]);
        if self.big {
            b.reverse();
        }
        b
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.take(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.take(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.take(at))
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.take(at))
    }
    /// `N` doubles from `at`, as single precision.
    fn f32s<const N: usize>(&self, at: usize) -> [f32; N] {
        std::array::from_fn(|i| self.f64(at + 8 * i) as f32)
    }
}

/// The NIfTI-2 header at the start of `bytes` (at least 540 of them), as a NIfTI-1 header.
/// The caller applies nibabel's silent fixes and every later check.
pub(super) fn parse_nifti2(path: &Path, bytes: &[u8]) -> Result<NiftiHeader, VolumeError> {
    let err = |msg: String| VolumeError::Header {
        path: path.to_path_buf(),
        msg,
    };
    let Some(endianness) = nifti2_endianness(bytes) else {
        return Err(err("not a NIfTI-2 header (sizeof_hdr is not 540)".into()));
    };
    if bytes.len() < NIFTI2_HEADER_BYTES {
        return Err(err(format!(
            "file is {} bytes, shorter than a NIfTI-2 header ({NIFTI2_HEADER_BYTES})",
            bytes.len()
        )));
    }
    let f = Fields {
        bytes,
        big: endianness == Endianness::Big,
    };
    let magic: [u8; 4] = bytes[4..8].try_into().unwrap_or_default();
    // A pair's "ni2" is read here and refused with NIfTI-1's "ni1" by `read::parse_header`.
    if &magic != b"n+2\0" && &magic != b"ni2\0" {
        return Err(err(format!("NIfTI-2 magic {magic:?} is not \"n+2\"")));
    }
    // nibabel accepts the check bytes as written or all zero, and refuses anything else.
    let eol = &bytes[8..12];
    if eol != EOL_CHECK && eol != [0; 4] {
        return Err(err(format!(
            "eol_check bytes {eol:?} are neither {EOL_CHECK:?} nor zero: the file was altered \
             by a text-mode transfer"
        )));
    }

    let ndim = f.i64(16);
    if !(1..=7).contains(&ndim) {
        return Err(err(format!(
            "dim[0] = {ndim} is not a number of dimensions in 1..=7"
        )));
    }
    let mut dim = [1u16; 8];
    dim[0] = ndim as u16;
    for (i, d) in dim.iter_mut().enumerate().skip(1).take(ndim as usize) {
        let v = f.i64(16 + 8 * i);
        if v <= 0 {
            return Err(err(format!("dim[{i}] = {v} is not a positive extent")));
        }
        if v > i16::MAX as i64 {
            return Err(err(format!(
                "dim[{i}] = {v}: axes longer than {} voxels are not supported",
                i16::MAX
            )));
        }
        *d = v as u16;
    }
    let vox_offset = f.i64(168);
    if !(0..=MAX_VOX_OFFSET).contains(&vox_offset) {
        return Err(err(format!(
            "vox_offset {vox_offset} is not a byte offset this reader supports (0..={MAX_VOX_OFFSET})"
        )));
    }
    // Codes beyond i16 are invalid codes either way; nibabel's fix then zeroes them.
    let code = |v: i32| i16::try_from(v).unwrap_or(i16::MAX);
    Ok(NiftiHeader {
        sizeof_hdr: NIFTI2_HEADER_BYTES as i32,
        dim_info: bytes[524],
        dim,
        intent_p1: f.f64(80) as f32,
        intent_p2: f.f64(88) as f32,
        intent_p3: f.f64(96) as f32,
        intent_code: code(f.i32(504)),
        datatype: f.i16(12),
        bitpix: f.i16(14),
        pixdim: f.f32s(104),
        vox_offset: vox_offset as f32,
        scl_slope: f.f64(176) as f32,
        scl_inter: f.f64(184) as f32,
        cal_max: f.f64(192) as f32,
        cal_min: f.f64(200) as f32,
        slice_duration: f.f64(208) as f32,
        toffset: f.f64(216) as f32,
        descrip: bytes[240..320].to_vec(),
        aux_file: bytes[320..344].try_into().unwrap_or_default(),
        qform_code: code(f.i32(344)),
        sform_code: code(f.i32(348)),
        quatern_b: f.f64(352) as f32,
        quatern_c: f.f64(360) as f32,
        quatern_d: f.f64(368) as f32,
        quatern_x: f.f64(376) as f32,
        quatern_y: f.f64(384) as f32,
        quatern_z: f.f64(392) as f32,
        srow_x: f.f32s(400),
        srow_y: f.f32s(432),
        srow_z: f.f32s(464),
        intent_name: bytes[508..524].try_into().unwrap_or_default(),
        magic,
        endianness,
        ..NiftiHeader::default()
    })
}
