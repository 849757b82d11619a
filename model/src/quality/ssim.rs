//! SSIM and multi-scale SSIM of 2D images and 3D volumes, as torchmetrics 1.9 computes them
//! (`structural_similarity_index_measure`, `multiscale_structural_similarity_index_measure`
//! with a gaussian window of σ = 1.5, k1 = 0.01, k2 = 0.03 and a fixed data range), in f64.
//!
//! What torchmetrics does, and so what this does:
//! * with a data range `(lo, hi)`, both images are clamped to it before each scale's SSIM,
//!   while MS-SSIM pools the *unclamped* values between scales (torchmetrics clamps a local
//!   copy inside its SSIM helper);
//! * both images are reflect-padded by the window's half width (5) on every spatial side and
//!   filtered "valid", so the SSIM map has the image's own size and its border windows see
//!   mirrored pixels;
//! * local variances below zero (rounding) are clamped to zero;
//! * SSIM is the mean of the map over channels and **all** positions; the contrast-structure
//!   term `cs` that MS-SSIM uses is the mean over the positions whose window lies inside the
//!   image only (the map cropped by 5 on every side);
//! * MS-SSIM (normalize = "relu", its default) runs five scales with 2×2(×2) average pooling
//!   (odd sizes dropping their last row) between them, clamps each scale's term at zero and
//!   returns `Π cs_i^β_i (i < 5) · ssim_5^β_5`.
//!
//! The gaussian window is separable (torchmetrics builds it as an outer product of 1D
//! windows), so it is applied one axis at a time: 11 taps per axis instead of 11² or 11³.

use super::QualityError;
use rayon::prelude::*;

/// Standard deviation of the gaussian window.
pub const SIGMA: f64 = 1.5;
/// Window half width: torchmetrics sizes the gaussian window as `int(3.5σ + 0.5)·2 + 1` = 11.
pub const HALF_WIDTH: usize = 5;
pub const K1: f64 = 0.01;
pub const K2: f64 = 0.03;
/// MS-SSIM's weights of the five scales (Wang et al. 2003, as torchmetrics).
pub const MS_SSIM_BETAS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];

/// A channels-first image or volume: `data` holds `channels × Π spatial` values.
#[derive(Debug, Clone, Copy)]
pub struct Grid<'a> {
    pub data: &'a [f64],
    pub channels: usize,
    /// 2 (H, W) or 3 (D, H, W) sizes.
    pub spatial: &'a [usize],
}

impl Grid<'_> {
    fn plane(&self) -> usize {
        self.spatial.iter().product()
    }
}

/// SSIM and the mean contrast-structure term of one pair (NaN when a side is below 11).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsimTerms {
    pub ssim: f64,
    pub cs: f64,
}

/// The normalised 1D gaussian window (torchmetrics `_gaussian`).
pub fn gaussian_window() -> [f64; 2 * HALF_WIDTH + 1] {
    let mut w = [0.0; 2 * HALF_WIDTH + 1];
    for (i, v) in w.iter_mut().enumerate() {
        let d = i as f64 - HALF_WIDTH as f64;
        *v = (-(d / SIGMA).powi(2) / 2.0).exp();
    }
    let sum: f64 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= sum);
    w
}

/// Smallest spatial size SSIM accepts: reflect padding by 5 needs 6 pixels. The contrast term
/// needs a position whose window lies inside (11 pixels); below that it is NaN, as the mean of
/// torchmetrics' empty crop.
pub const MIN_SSIM_SIZE: usize = HALF_WIDTH + 1;

/// Smallest spatial size MS-SSIM accepts: the fifth scale (a sixteenth of the size) must still
/// exceed the window (torchmetrics: `size // 16 > 10`).
pub const MIN_MS_SSIM_SIZE: usize = 16 * (2 * HALF_WIDTH + 1);

/// SSIM of `pred` against `target`, both clamped to `range` (the valid values).
pub fn ssim_terms(
    pred: Grid<'_>,
    target: Grid<'_>,
    range: (f64, f64),
) -> Result<SsimTerms, QualityError> {
    check_pair(&pred, &target)?;
    check_size(&pred, "SSIM", MIN_SSIM_SIZE)?;
    let data_range = range.1 - range.0;
    let c1 = (K1 * data_range).powi(2);
    let c2 = (K2 * data_range).powi(2);
    let window = gaussian_window();
    let plane = pred.plane();
    let dims = pred.spatial;
    let (mut ssim_sum, mut cs_sum, mut inner_count) = (0.0, 0.0, 0usize);
    for c in 0..pred.channels {
        let clamp =
            |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.clamp(range.0, range.1)).collect() };
        let p = clamp(&pred.data[c * plane..(c + 1) * plane]);
        let t = clamp(&target.data[c * plane..(c + 1) * plane]);
        // The five local moments are independent filterings: one per thread.
        let maps: Vec<Vec<f64>> = (0..5)
            .into_par_iter()
            .map(|m| {
                let src: Vec<f64> = match m {
                    0 => p.clone(),
                    1 => t.clone(),
                    2 => p.iter().map(|v| v * v).collect(),
                    3 => t.iter().map(|v| v * v).collect(),
                    _ => p.iter().zip(&t).map(|(a, b)| a * b).collect(),
                };
                blur(&src, dims, &window)
            })
            .collect();
        let [mu_p, mu_t, e_pp, e_tt, e_pt] = [&maps[0], &maps[1], &maps[2], &maps[3], &maps[4]];
        for i in 0..plane {
            let (mp, mt) = (mu_p[i], mu_t[i]);
            let var_p = (e_pp[i] - mp * mp).max(0.0);
            let var_t = (e_tt[i] - mt * mt).max(0.0);
            let cov = e_pt[i] - mp * mt;
            let upper = 2.0 * cov + c2;
            let lower = var_p + var_t + c2;
            ssim_sum += ((2.0 * mp * mt + c1) * upper) / ((mp * mp + mt * mt + c1) * lower);
            if inside(i, dims) {
                cs_sum += upper / lower;
                inner_count += 1;
            }
        }
    }
    Ok(SsimTerms {
        ssim: ssim_sum / (pred.channels * plane) as f64,
        cs: cs_sum / inner_count as f64,
    })
}

/// Multi-scale SSIM (five scales, relu-normalised terms), clamping to `range` at each scale.
/// Returns it with the full-scale SSIM, which its first scale computes anyway.
pub fn ms_ssim(
    pred: Grid<'_>,
    target: Grid<'_>,
    range: (f64, f64),
) -> Result<(f64, f64), QualityError> {
    check_pair(&pred, &target)?;
    check_size(&pred, "MS-SSIM", MIN_MS_SSIM_SIZE)?;
    let mut p = pred.data.to_vec();
    let mut t = target.data.to_vec();
    let mut dims = pred.spatial.to_vec();
    let mut result = 1.0;
    let mut full_scale_ssim = f64::NAN;
    for (scale, beta) in MS_SSIM_BETAS.iter().enumerate() {
        let terms = ssim_terms(
            Grid {
                data: &p,
                channels: pred.channels,
                spatial: &dims,
            },
            Grid {
                data: &t,
                channels: pred.channels,
                spatial: &dims,
            },
            range,
        )?;
        if scale == 0 {
            full_scale_ssim = terms.ssim;
        }
        let last = scale + 1 == MS_SSIM_BETAS.len();
        let term = if last { terms.ssim } else { terms.cs };
        result *= term.max(0.0).powf(*beta);
        if !last {
            let (pooled_p, pooled_dims) = average_pool_2(&p, pred.channels, &dims);
            p = pooled_p;
            t = average_pool_2(&t, pred.channels, &dims).0;
            dims = pooled_dims;
        }
    }
    Ok((result, full_scale_ssim))
}

fn check_pair(pred: &Grid<'_>, target: &Grid<'_>) -> Result<(), QualityError> {
    if pred.spatial != target.spatial || pred.channels != target.channels {
        return Err(QualityError::Shape(format!(
            "the reconstruction is {}×{:?}, the image {}×{:?}",
            pred.channels, pred.spatial, target.channels, target.spatial
        )));
    }
    if !(2..=3).contains(&pred.spatial.len()) {
        return Err(QualityError::Shape(format!(
            "SSIM takes 2 or 3 spatial axes, not {}",
            pred.spatial.len()
        )));
    }
    let want = pred.channels * pred.plane();
    if pred.data.len() != want || target.data.len() != want {
        return Err(QualityError::Shape(format!(
            "{} and {} values for {} channels of {:?}",
            pred.data.len(),
            target.data.len(),
            pred.channels,
            pred.spatial
        )));
    }
    Ok(())
}

/// Every spatial side of `grid` at least `min`, else the error naming `what` needs it.
fn check_size(grid: &Grid<'_>, what: &'static str, min: usize) -> Result<(), QualityError> {
    match grid.spatial.iter().find(|&&n| n < min) {
        Some(&size) => Err(QualityError::TooSmall { what, size, min }),
        None => Ok(()),
    }
}

/// Whether flat index `i` of a `dims` array lies at least a half width from every border.
fn inside(mut i: usize, dims: &[usize]) -> bool {
    for &n in dims.iter().rev() {
        let x = i % n;
        if x < HALF_WIDTH || x + HALF_WIDTH >= n {
            return false;
        }
        i /= n;
    }
    true
}

/// Separable gaussian filter over every axis, reflect-padded (`a b c | b a` at the ends).
fn blur(src: &[f64], dims: &[usize], window: &[f64]) -> Vec<f64> {
    let mut cur = src.to_vec();
    let mut next = vec![0.0; src.len()];
    for axis in 0..dims.len() {
        filter_axis(&cur, &mut next, dims, axis, window);
        std::mem::swap(&mut cur, &mut next);
    }
    cur
}

fn filter_axis(src: &[f64], dst: &mut [f64], dims: &[usize], axis: usize, window: &[f64]) {
    let n = dims[axis];
    let stride: usize = dims[axis + 1..].iter().product();
    let outer = src.len() / (n * stride);
    let reflect = |j: isize| -> usize {
        let last = n as isize - 1;
        let r = if j < 0 {
            -j
        } else if j > last {
            2 * last - j
        } else {
            j
        };
        r as usize
    };
    if stride == 1 {
        // The last axis: each output is a dot product along a contiguous line.
        for o in 0..outer {
            let line = &src[o * n..(o + 1) * n];
            let out = &mut dst[o * n..(o + 1) * n];
            for (x, d) in out.iter_mut().enumerate() {
                let from = x as isize - HALF_WIDTH as isize;
                *d = if from >= 0 && x + HALF_WIDTH < n {
                    let seg = &line[from as usize..from as usize + window.len()];
                    seg.iter().zip(window).map(|(a, b)| a * b).sum()
                } else {
                    window
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * line[reflect(from + k as isize)])
                        .sum()
                };
            }
        }
        return;
    }
    for o in 0..outer {
        let base = o * n * stride;
        for x in 0..n {
            let out = &mut dst[base + x * stride..base + (x + 1) * stride];
            out.iter_mut().for_each(|v| *v = 0.0);
            for (k, w) in window.iter().enumerate() {
                let from = reflect(x as isize + k as isize - HALF_WIDTH as isize);
                let row = &src[base + from * stride..base + (from + 1) * stride];
                out.iter_mut().zip(row).for_each(|(d, s)| *d += w * s);
            }
        }
    }
}

/// `avg_pool(kernel 2, stride 2)` over every spatial axis of each channel (floor sizes).
fn average_pool_2(src: &[f64], channels: usize, dims: &[usize]) -> (Vec<f64>, Vec<usize>) {
    let out_dims: Vec<usize> = dims.iter().map(|n| n / 2).collect();
    let in_plane: usize = dims.iter().product();
    let out_plane: usize = out_dims.iter().product();
    let corners = 1usize << dims.len();
    let mut out = vec![0.0; channels * out_plane];
    let mut coord = vec![0usize; dims.len()];
    for c in 0..channels {
        for o in 0..out_plane {
            // Output coordinate, last axis fastest.
            let mut rest = o;
            for (a, n) in out_dims.iter().enumerate().rev() {
                coord[a] = rest % n;
                rest /= n;
            }
            let mut sum = 0.0;
            for corner in 0..corners {
                let mut flat = 0;
                for (a, n) in dims.iter().enumerate() {
                    let bit = (corner >> (dims.len() - 1 - a)) & 1;
                    flat = flat * n + 2 * coord[a] + bit;
                }
                sum += src[c * in_plane + flat];
            }
            out[c * out_plane + o] = sum / corners as f64;
        }
    }
    (out, out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid<'a>(data: &'a [f64], spatial: &'a [usize]) -> Grid<'a> {
        Grid {
            data,
            channels: 1,
            spatial,
        }
    }

    fn ramp(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
            .collect()
    }

    #[test]
    fn identical_images_score_one() {
        let dims = [12, 13];
        let a = ramp(12 * 13);
        let t = ssim_terms(grid(&a, &dims), grid(&a, &dims), (-1.0, 1.0)).unwrap();
        assert!((t.ssim - 1.0).abs() < 1e-12 && (t.cs - 1.0).abs() < 1e-12);
        let dims3 = [11, 12, 11];
        let v = ramp(11 * 12 * 11);
        let t3 = ssim_terms(grid(&v, &dims3), grid(&v, &dims3), (-1.0, 1.0)).unwrap();
        assert!((t3.ssim - 1.0).abs() < 1e-12);
    }

    #[test]
    fn noise_lowers_ssim_and_it_is_symmetric() {
        let dims = [16, 16];
        let a = ramp(256);
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.3 * ((i * 7919 % 13) as f64 / 13.0 - 0.5))
            .collect();
        let ab = ssim_terms(grid(&a, &dims), grid(&b, &dims), (-1.0, 1.0)).unwrap();
        let ba = ssim_terms(grid(&b, &dims), grid(&a, &dims), (-1.0, 1.0)).unwrap();
        assert!(ab.ssim < 0.99 && ab.ssim > 0.0);
        assert!((ab.ssim - ba.ssim).abs() < 1e-12);
    }

    #[test]
    fn blur_preserves_constants_at_the_borders() {
        // A constant stays constant only if the reflected border and the window's weights are
        // right: a zero pad or an unnormalised window would change the edges.
        let dims = [7, 9];
        let a = vec![0.25; 63];
        let out = blur(&a, &dims, &gaussian_window());
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-14));
    }

    #[test]
    fn pooling_averages_blocks_and_drops_odd_edges() {
        let dims = [3, 4];
        let a: Vec<f64> = (0..12).map(|v| v as f64).collect();
        let (p, d) = average_pool_2(&a, 1, &dims);
        assert_eq!(d, vec![1, 2]);
        assert_eq!(
            p,
            vec![(0.0 + 1.0 + 4.0 + 5.0) / 4.0, (2.0 + 3.0 + 6.0 + 7.0) / 4.0]
        );
    }

    #[test]
    fn sizes_below_the_window_are_errors() {
        let a = ramp(50);
        let dims = [5, 10];
        assert!(matches!(
            ssim_terms(grid(&a, &dims), grid(&a, &dims), (-1.0, 1.0)),
            Err(QualityError::TooSmall { size: 5, .. })
        ));
        // 6..10 pixels: SSIM, but no window fits inside for the contrast term.
        let b = ramp(60);
        let six = [6, 10];
        let t = ssim_terms(grid(&b, &six), grid(&b, &six), (-1.0, 1.0)).unwrap();
        assert!((t.ssim - 1.0).abs() < 1e-12 && t.cs.is_nan());
        let big = ramp(64 * 64);
        let d64 = [64, 64];
        assert!(matches!(
            ms_ssim(grid(&big, &d64), grid(&big, &d64), (-1.0, 1.0)),
            Err(QualityError::TooSmall { min: 176, .. })
        ));
    }
}
