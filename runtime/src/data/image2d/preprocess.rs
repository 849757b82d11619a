//! The reference MedVAE 2D intensity pipeline after decoding, in float32 like the reference:
//! `Resize(bicubic, antialias)` (finetuning only) → MONAI `ScaleIntensity(channel_wise=True,
//! minv=0, maxv=1)` → `Normalize(0.5, 0.5)` → mean over channels when merging.

use super::{Image2d, Image2dError, Samples};
use medvae_kernels::cpu::resize::{resize_forward, ResizePlan};
use std::path::Path;

/// The square size `load_2d_finetune` resizes every image to.
pub const FINETUNE_SIZE: [usize; 2] = [384, 384];

/// What to do after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess2d {
    /// Resize to `[h, w]` (antialiased bicubic) before normalising; `None` keeps the size.
    pub resize_to: Option<[usize; 2]>,
    /// Average the channels into one (`img.mean(0, keepdim=True)`).
    pub merge_channels: bool,
}

impl Preprocess2d {
    /// The reference `load_2d_finetune`: resize to 384 × 384.
    pub fn finetune(merge_channels: bool) -> Self {
        Self {
            resize_to: Some(FINETUNE_SIZE),
            merge_channels,
        }
    }

    /// The reference `load_2d` (inference): native size.
    pub fn inference(merge_channels: bool) -> Self {
        Self {
            resize_to: None,
            merge_channels,
        }
    }
}

/// Per-channel `(min, max)` of a channels-last buffer.
fn channel_ranges(data: &[f32], channels: usize) -> Vec<(f32, f32)> {
    let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); channels];
    for pixel in data.chunks_exact(channels) {
        for (r, &v) in ranges.iter_mut().zip(pixel) {
            r.0 = r.0.min(v);
            r.1 = r.1.max(v);
        }
    }
    ranges
}

/// torchvision resizes integer tensors in float32 and casts back with `round` (half to even)
/// then a wrapping int16 conversion; reproduce that for `I;16` images.
fn round_to_int16(data: &mut [f32]) {
    for v in data {
        *v = v.round_ties_even() as i32 as i16 as f32;
    }
}

/// Run the reference preprocessing on a decoded image. `source` names the file in errors.
///
/// Constant channels: MONAI's `rescale_array` maps a channel whose min equals its max to
/// `minv = 0` (so −1 after normalising) instead of dividing by zero, and so does this. A
/// channel that is constant *before* resizing is treated the same way even when float
/// rounding in the resize made it vary by an ulp — the reference would stretch that rounding
/// noise to the full [−1, 1] range; we return the −1 it means.
pub fn preprocess_2d(
    img: &Image2d,
    p: &Preprocess2d,
    source: &Path,
) -> Result<Image2d, Image2dError> {
    let geometry = |msg: String| Image2dError::Geometry {
        path: source.to_path_buf(),
        msg,
    };
    let (h, w, c) = (img.height, img.width, img.channels);
    if h == 0 || w == 0 || c == 0 {
        return Err(geometry(format!("empty image {h}x{w}x{c}")));
    }
    if h.checked_mul(w).and_then(|v| v.checked_mul(c)) != Some(img.data.len()) {
        return Err(geometry(format!(
            "{} values for a {h}x{w}x{c} image",
            img.data.len()
        )));
    }
    if img.data.iter().any(|v| !v.is_finite()) {
        return Err(Image2dError::NonFinite {
            path: source.to_path_buf(),
            stage: "decoded image",
        });
    }
    let constant_before: Vec<bool> = channel_ranges(&img.data, c)
        .iter()
        .map(|&(lo, hi)| lo == hi)
        .collect();

    // torchvision's Resize returns the image untouched when the size already matches.
    let (out_h, out_w, mut data) = match p.resize_to {
        Some(size) if size != [h, w] => {
            let plan = ResizePlan::bicubic_aa([h, w], size).map_err(|e| Image2dError::Resize {
                path: source.to_path_buf(),
                source: e,
            })?;
            let mut out = vec![0f32; size[0] * size[1] * c];
            resize_forward(&plan, 1, c, &img.data, &mut out).map_err(|e| Image2dError::Resize {
                path: source.to_path_buf(),
                source: e,
            })?;
            if img.samples == Samples::Int16 {
                round_to_int16(&mut out);
            }
            (size[0], size[1], out)
        }
        _ => (h, w, img.data.clone()),
    };

    // ScaleIntensity(channel_wise, 0, 1) then Normalize(0.5, 0.5), with the reference's f32
    // operation order: (x - min) / (max - min), then (x - 0.5) / 0.5.
    let ranges = channel_ranges(&data, c);
    for pixel in data.chunks_exact_mut(c) {
        for ((v, &(lo, hi)), &constant) in pixel.iter_mut().zip(&ranges).zip(&constant_before) {
            let unit = if constant || lo == hi {
                0.0
            } else {
                (*v - lo) / (hi - lo)
            };
            *v = (unit - 0.5) / 0.5;
        }
    }

    let (channels, data) = if p.merge_channels && c > 1 {
        let merged = data
            .chunks_exact(c)
            .map(|pixel| pixel.iter().fold(0f32, |acc, &v| acc + v) / c as f32)
            .collect();
        (1, merged)
    } else {
        (c, data)
    };
    if data.iter().any(|v| !v.is_finite()) {
        return Err(Image2dError::NonFinite {
            path: source.to_path_buf(),
            stage: "preprocessed image",
        });
    }
    Ok(Image2d {
        height: out_h,
        width: out_w,
        channels,
        data,
        samples: Samples::Float,
    })
}
