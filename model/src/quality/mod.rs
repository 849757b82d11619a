//! Reconstruction quality of one image or volume: what `medvae-fast eval` reports per sample.
//!
//! Both arrays are in the models' normalised intensity space, [-1, 1]. The reconstruction is
//! clamped to that range first (the image a user would save; torchmetrics does the same when
//! given `data_range=(-1, 1)`, and so does this, down to where MS-SSIM clamps: see [`ssim`]),
//! so every metric uses a data range of 2:
//! * `l1`, `mse`: means over every value;
//! * `psnr`: `10·log10(2² / mse)`, which equals PSNR with data range 1 on [0, 1] images;
//! * `ssim`, `ms_ssim`: [`ssim`] (torchmetrics' definitions). MS-SSIM needs every spatial
//!   side ≥ 176 and is `None` for smaller samples;
//! * `lpips`: [`perceptual`], when LPIPS weights are given.

pub mod perceptual;
pub mod ssim;
pub mod summary;

pub use perceptual::{Perceptual, MIN_LPIPS_SIZE};
pub use summary::{paired, PairedStats, Stats, Summary};

use medvae_runtime::layout::to_channels_first;
use ssim::{ms_ssim, ssim_terms, Grid, MIN_MS_SSIM_SIZE};
use thiserror::Error;

/// The normalised intensity range of every MedVAE input.
pub const VALUE_RANGE: (f64, f64) = (-1.0, 1.0);

#[derive(Debug, Error, PartialEq)]
pub enum QualityError {
    #[error("shapes differ: {0}")]
    Shape(String),
    #[error("{what} needs every spatial side ≥ {min}, this one is {size}")]
    TooSmall {
        what: &'static str,
        size: usize,
        min: usize,
    },
    #[error("the {0} holds NaN or infinite values")]
    NotFinite(&'static str),
}

/// The metrics of one reconstruction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    pub l1: f64,
    pub mse: f64,
    /// `+inf` for a perfect reconstruction.
    pub psnr: f64,
    pub ssim: f64,
    pub ms_ssim: Option<f64>,
    /// LPIPS (VGG16), when `eval` was given the network ([`Perceptual`]); `measure` leaves it
    /// `None`.
    pub lpips: Option<f64>,
}

/// Compare a reconstruction with its input, both channels-first (`channels × Π spatial`).
pub fn measure(
    reconstruction: &[f32],
    image: &[f32],
    channels: usize,
    spatial: &[usize],
) -> Result<Quality, QualityError> {
    let want = channels * spatial.iter().product::<usize>();
    if reconstruction.len() != want || image.len() != want {
        return Err(QualityError::Shape(format!(
            "{} reconstructed and {} input values for {channels} channel(s) of {spatial:?}",
            reconstruction.len(),
            image.len()
        )));
    }
    // A NaN would pass through the clamp below (f64::clamp keeps NaN) and turn every mean
    // into NaN without saying why.
    if reconstruction.iter().any(|v| !v.is_finite()) {
        return Err(QualityError::NotFinite("reconstruction"));
    }
    if image.iter().any(|v| !v.is_finite()) {
        return Err(QualityError::NotFinite("input image"));
    }
    let (lo, hi) = VALUE_RANGE;
    // SSIM clamps by itself, and MS-SSIM must pool the unclamped values (as torchmetrics):
    // only L1 and MSE clamp here.
    let (raw_pred, raw_target) = (widened(reconstruction), widened(image));
    let n = want as f64;
    let (mut abs, mut sq) = (0.0, 0.0);
    for (p, t) in raw_pred.iter().zip(&raw_target) {
        let d = p.clamp(lo, hi) - t.clamp(lo, hi);
        abs += d.abs();
        sq += d * d;
    }
    let mse = sq / n;
    let range = hi - lo;
    let grid = |data| Grid {
        data,
        channels,
        spatial,
    };
    let (ssim, ms_ssim) = if spatial.iter().all(|&s| s >= MIN_MS_SSIM_SIZE) {
        let (ms, ssim) = ms_ssim(grid(&raw_pred), grid(&raw_target), VALUE_RANGE)?;
        (ssim, Some(ms))
    } else {
        let ssim = ssim_terms(grid(&raw_pred), grid(&raw_target), VALUE_RANGE)?.ssim;
        (ssim, None)
    };
    Ok(Quality {
        l1: abs / n,
        mse,
        psnr: 10.0 * (range * range / mse).log10(),
        ssim,
        ms_ssim,
        lpips: None,
    })
}

/// SSIM of each sample of a channels-last batch (`[N, spatial.., C]`, 2 or 3 spatial axes):
/// the reconstruction clamped, as [`measure`]. `None` for samples with a side below
/// [`ssim::MIN_SSIM_SIZE`]. What `finetune`'s validation logs.
pub fn batch_ssim(
    reconstruction: &[f32],
    image: &[f32],
    shape: &[usize],
) -> Result<Vec<Option<f64>>, QualityError> {
    let (n, channels) = match shape {
        [n, .., c] if (4..=5).contains(&shape.len()) => (*n, *c),
        _ => {
            return Err(QualityError::Shape(format!(
                "a batch [N, spatial.., C] with 2 or 3 spatial axes, not {shape:?}"
            )))
        }
    };
    let spatial = &shape[1..shape.len() - 1];
    if reconstruction.len() != image.len() {
        return Err(QualityError::Shape(format!(
            "{} reconstructed and {} input values for a batch of {shape:?}",
            reconstruction.len(),
            image.len()
        )));
    }
    // One layout change for the whole batch (it also checks the length against the shape).
    let channels_first = |v: &[f32]| {
        to_channels_first(v, shape)
            .map(|(data, _)| data)
            .map_err(|e| QualityError::Shape(e.to_string()))
    };
    let (rec, img) = (channels_first(reconstruction)?, channels_first(image)?);
    let per = rec.len() / n.max(1);
    (0..n)
        .map(|i| {
            if spatial.iter().any(|&s| s < ssim::MIN_SSIM_SIZE) {
                return Ok(None);
            }
            let sample = |v: &[f32]| widened(&v[i * per..(i + 1) * per]);
            let (p, t) = (sample(&rec), sample(&img));
            let grid = |data| Grid {
                data,
                channels,
                spatial,
            };
            Ok(Some(ssim_terms(grid(&p), grid(&t), VALUE_RANGE)?.ssim))
        })
        .collect()
}

/// Values as f64.
pub fn widened(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_the_reconstruction_and_computes_psnr_by_hand() {
        let image = vec![0.5f32; 16 * 16];
        // Half the pixels overshoot to 3.0: clamped to 1.0, an error of 0.5 each.
        let rec: Vec<f32> = (0..256)
            .map(|i| if i % 2 == 0 { 3.0 } else { 0.5 })
            .collect();
        let q = measure(&rec, &image, 1, &[16, 16]).unwrap();
        assert!((q.l1 - 0.25).abs() < 1e-12);
        assert!((q.mse - 0.125).abs() < 1e-12);
        assert!((q.psnr - 10.0 * (4.0f64 / 0.125).log10()).abs() < 1e-9);
        assert!(q.ms_ssim.is_none());
    }

    #[test]
    fn a_perfect_reconstruction_has_infinite_psnr_and_unit_ssim() {
        let image: Vec<f32> = (0..2 * 176 * 180)
            .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
            .collect();
        let q = measure(&image, &image, 2, &[176, 180]).unwrap();
        assert_eq!(q.psnr, f64::INFINITY);
        assert!((q.ssim - 1.0).abs() < 1e-12);
        assert!((q.ms_ssim.unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn batch_ssim_equals_measure_per_sample() {
        // Two 12x13 samples with 2 channels, channels-last.
        let (h, w, c) = (12, 13, 2);
        let image: Vec<f32> = (0..2 * h * w * c)
            .map(|i| ((i * 31 % 53) as f32 / 26.0) - 1.0)
            .collect();
        let rec: Vec<f32> = image.iter().map(|v| 1.3 * v - 0.1).collect();
        let got = batch_ssim(&rec, &image, &[2, h, w, c]).unwrap();
        for (k, g) in got.iter().enumerate() {
            let per = h * w * c;
            let cf = |v: &[f32]| -> Vec<f32> {
                (0..per)
                    .map(|j| v[(j % (h * w)) * c + j / (h * w)])
                    .collect()
            };
            let q = measure(
                &cf(&rec[k * per..(k + 1) * per]),
                &cf(&image[k * per..(k + 1) * per]),
                c,
                &[h, w],
            )
            .unwrap();
            assert_eq!(g.unwrap(), q.ssim);
        }
        let tiny = vec![0.0f32; 5 * 40];
        assert_eq!(
            batch_ssim(&tiny, &tiny, &[1, 5, 40, 1]).unwrap(),
            vec![None]
        );
    }

    #[test]
    fn mismatched_or_non_finite_inputs_are_errors() {
        let a = vec![0.0f32; 144];
        assert!(matches!(
            measure(&a, &a[..100], 1, &[12, 12]),
            Err(QualityError::Shape(_))
        ));
        let mut nan = a.clone();
        nan[3] = f32::NAN;
        assert_eq!(
            measure(&nan, &a, 1, &[12, 12]),
            Err(QualityError::NotFinite("reconstruction"))
        );
    }
}
