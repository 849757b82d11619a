//! 3D NIfTI preprocessing, equal to the reference MedVAE loaders (MONAI `LoadImage` →
//! `EnsureChannelFirst` → `Orientation("RAS")` → intensity → `Normalize(0.5, 0.5)` → crop):
//!
//! | function | reference | result |
//! |---|---|---|
//! | [`load_volume`] | the shared prefix | the whole RAS volume in [-1, 1] (what shards store) |
//! | [`load_mri_3d`] / [`load_ct_3d`] | `load_mri_3d` / `load_ct_3d` | + `CropForeground(k_divisible=16)` |
//! | [`load_mri_3d_finetune`] / [`load_ct_3d_finetune`] | `load_*_3d_finetune` | + pad to ≥ 64 with -1, random 64³ crop |
//!
//! Volumes are single-channel, C-order over the RAS array axes: element `(a, b, c)` is
//! `data[(a * shape[1] + b) * shape[2] + c]`, the layout of MONAI's `[1, D0, D1, D2]` tensor and
//! of a channels-last `[D, H, W, 1]` activation.
//!
//! Unlike the reference (which prints the exception and returns an all-zero image), every
//! problem is a [`VolumeError`] naming the file: unreadable or corrupt files, unsupported
//! datatypes or dimensions, NaN/Inf voxels, a constant MRI volume (min-max undefined), a CT
//! volume without any voxel above 0 HU at inference (empty foreground).

mod affine;
mod array;
mod crop;
mod error;
mod gather;
mod geometry;
mod intensity;
mod nifti2;
mod orient;
mod read;
mod write;

pub use affine::{best_affine, ras_orientation, Affine, Orientation, IDENTITY_AFFINE};
pub use array::{decode_nifti_array, read_nifti_array, read_nifti_descrip, NiftiArray};
pub use crop::{
    crop_foreground, crop_foreground_at, crop_into, crop_origin, crop_padded, finetune_crop,
    foreground_box, CropError, CropSource, FINETUNE_PAD_VALUE, FOREGROUND_PAD_VALUE,
};
pub use error::VolumeError;
pub use geometry::{crop_affine, image_affine_of_latent, latent_affine, ras_affine};
pub use intensity::{normalise, Modality, CT_WINDOW};
pub use orient::reorient;
pub use read::{decode_nifti, read_nifti, NiftiVolume};
pub use write::{nifti_bytes, write_nifti, write_nifti_with_affine, DESCRIP_MAX};

use rand::Rng;
use std::path::Path;

/// `CropForeground`'s `k_divisible` in the reference inference loaders.
pub const INFERENCE_K_DIVISIBLE: usize = 16;
/// The finetuning crop edge.
pub const FINETUNE_CROP: usize = 64;

/// A single-channel volume in RAS array order (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub shape: [usize; 3],
    pub data: Vec<f32>,
}

/// Read a NIfTI file and reorient it to RAS (no intensity change): MONAI's `LoadImage` →
/// `EnsureChannelFirst` → `Orientation("RAS")`.
pub fn load_ras(path: &Path) -> Result<Volume, VolumeError> {
    Ok(load_ras_with_affine(path)?.0)
}

/// [`load_ras`], and the reoriented volume's affine ([`ras_affine`]).
pub fn load_ras_with_affine(path: &Path) -> Result<(Volume, Affine), VolumeError> {
    let nii = read_nifti(path)?;
    let orientation = ras_orientation(&nii.affine).map_err(|msg| VolumeError::Affine {
        path: path.to_path_buf(),
        msg,
    })?;
    let affine = ras_affine(&nii.affine, nii.dims, &orientation);
    Ok((reorient(&nii.data, nii.dims, &orientation), affine))
}

/// The whole preprocessed volume: RAS, modality intensity rule, [-1, 1].
pub fn load_volume(path: &Path, modality: Modality) -> Result<Volume, VolumeError> {
    let mut vol = load_ras(path)?;
    normalise(&mut vol.data, modality, path)?;
    Ok(vol)
}

/// Reference `load_mri_3d` (inference): min-max, [-1, 1], `CropForeground(k_divisible=16)`.
pub fn load_mri_3d(path: &Path) -> Result<Volume, VolumeError> {
    Ok(load_inference(path, Modality::Mri)?.0)
}

/// Reference `load_ct_3d` (inference): HU window, [-1, 1], `CropForeground(k_divisible=16)`.
pub fn load_ct_3d(path: &Path) -> Result<Volume, VolumeError> {
    Ok(load_inference(path, Modality::Ct)?.0)
}

/// [`load_mri_3d`] / [`load_ct_3d`] by `modality`, with the affine of the volume they return
/// (its voxels' positions in the file's world space: [`ras_affine`], then [`crop_affine`]).
pub fn load_inference(path: &Path, modality: Modality) -> Result<(Volume, Affine), VolumeError> {
    let (mut vol, affine) = load_ras_with_affine(path)?;
    normalise(&mut vol.data, modality, path)?;
    let (cropped, start) = crop_foreground_at(&vol, INFERENCE_K_DIVISIBLE, path)?;
    Ok((cropped, crop_affine(&affine, start)))
}

/// Reference `load_mri_3d_finetune`: min-max, [-1, 1], pad to ≥ 64 with -1, random 64³ crop.
pub fn load_mri_3d_finetune<R: Rng>(path: &Path, rng: &mut R) -> Result<Volume, VolumeError> {
    let vol = load_volume(path, Modality::Mri)?;
    finetune_at_64(&vol, path, rng)
}

/// Reference `load_ct_3d_finetune`: HU window, [-1, 1], pad to ≥ 64 with -1, random 64³ crop.
pub fn load_ct_3d_finetune<R: Rng>(path: &Path, rng: &mut R) -> Result<Volume, VolumeError> {
    let vol = load_volume(path, Modality::Ct)?;
    finetune_at_64(&vol, path, rng)
}

fn finetune_at_64<R: Rng>(vol: &Volume, path: &Path, rng: &mut R) -> Result<Volume, VolumeError> {
    finetune_crop(vol, [FINETUNE_CROP; 3], rng).map_err(|e| VolumeError::Layout {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}
