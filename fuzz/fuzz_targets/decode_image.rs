//! Fuzzes the image decode path of `data prepare` from raw bytes: every input goes through
//! * the PNG decoder and, when it decodes, the reference 2D preprocessing (native size, and a
//!   small resize for images small enough to keep runs fast);
//! * the NIfTI-1 decoder (uncompressed bytes, as `read_nifti` hands them over after gunzip)
//!   and, when it decodes, RAS reorientation, both intensity rules and the foreground crop;
//! * the NIfTI-1 array reader that `medvae-fast decode` reads latents with.
//!
//! Any panic, overflow, or out-of-memory is a bug: the loaders must return errors.
//! Seeds: `scripts/make_fuzz_seeds.py` writes real-derived PNG and NIfTI seeds into
//! `fuzz/corpus/decode_image`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medvae_runtime::data::image2d::{decode_png, preprocess_2d, Preprocess2d};
use medvae_runtime::data::volume3d::{
    crop_foreground, decode_nifti, decode_nifti_array, normalise, ras_orientation, reorient, Modality,
};
use std::path::Path;

/// Largest image (pixels) that is also resized: the resize is O(pixels) per output row.
const RESIZE_MAX_PIXELS: usize = 512 * 512;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-input");
    if let Ok(img) = decode_png(data, path) {
        let _ = preprocess_2d(&img, &Preprocess2d::inference(true), path);
        if img.height.saturating_mul(img.width) <= RESIZE_MAX_PIXELS {
            let small = Preprocess2d {
                resize_to: Some([24, 40]),
                merge_channels: false,
            };
            let _ = preprocess_2d(&img, &small, path);
        }
    }
    if let Ok(a) = decode_nifti_array(path, data) {
        assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    }
    if let Ok(nii) = decode_nifti(path, data) {
        if let Ok(orientation) = ras_orientation(&nii.affine) {
            let vol = reorient(&nii.data, nii.dims, &orientation);
            let mut ct = vol.clone();
            if normalise(&mut ct.data, Modality::Ct, path).is_ok() {
                let _ = crop_foreground(&ct, 16, path);
            }
            let mut mri = vol;
            if normalise(&mut mri.data, Modality::Mri, path).is_ok() {
                let _ = crop_foreground(&mri, 16, path);
            }
        }
    }
});
