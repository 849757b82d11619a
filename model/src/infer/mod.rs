//! Inference: images and volumes to latents, as the reference's `medvae_inference` /
//! `MVAE.forward` (medvae 0.1.7) produce them.
//!
//! * [`source`]: the model — a checkpoint (configuration derived from its shapes), a zoo name
//!   (refused without weights unless random weights are asked for), and their agreement;
//! * [`run`]: preprocessing per model kind and modality, encoding, the latent the reference
//!   returns, decoding; outputs as the reference's NumPy arrays;
//! * [`window`]: MONAI-exact sliding-window inference with gaussian blending (3D);
//! * [`listing`]: which files a run reads (folders, trees, medvae-fast's own outputs);
//! * [`files`]: where their outputs go, and that no output replaces an input;
//! * [`provenance`]: what each output records about the weights and options that made it;
//! * [`decode`]: `z` latent files back to images;
//! * [`write_array`]: an output array to `.nii.gz` like `nib.save(Nifti1Image(a, eye(4)))`.
//!
//! Every function is usable without the CLI (`medvae-fast infer` is a thin shell around them).

pub mod decode;
pub mod error;
pub mod files;
pub mod listing;
pub mod pipeline;
pub mod provenance;
pub mod run;
pub mod source;
pub mod window;

pub use decode::{z_tensor, LatentDecoder};
pub use error::InferError;
pub use files::{decoded_path, plan, Job, Plan};
pub use listing::{list, Listing, Select};
pub use pipeline::{pipelined, StageTimes};
pub use provenance::{fingerprints, settings, Fingerprints, OutputKind, Provenance};
pub use run::{
    input_kind, output_stem, reference_array, Array, InferOptions, Inferencer, Inferred, InputKind,
    Modality, Prepared, Preparer,
};
pub use source::{load_model, missing_weights_message, LoadedModel, ModelRequest, HF_REPO};
pub use window::{
    importance_map, resize_nearest_exact, roi_size_calc, scan_interval, window_starts, Blend,
    SlidingWindow, DEFAULT_OVERLAP, DEFAULT_SIGMA_SCALE,
};

use medvae_runtime::data::volume3d::{write_nifti, write_nifti_with_affine, Affine};
use std::path::Path;

/// Write an output array as NIfTI-1 (gzip for `.gz` names), described by `descrip` (a
/// [`Provenance::descrip`], or empty), with `affine` when given and the array has exactly three
/// (spatial) axes, else the reference's identity.
pub fn write_array(
    path: &Path,
    a: &Array,
    descrip: &str,
    affine: Option<&Affine>,
) -> Result<(), InferError> {
    match affine {
        Some(affine) if a.shape.len() == 3 => {
            write_nifti_with_affine(path, &a.shape, &a.data, descrip, affine)?
        }
        _ => write_nifti(path, &a.shape, &a.data, descrip)?,
    }
    Ok(())
}
