//! The per-layer LPIPS distance on channels-last features, forward and backward side by side:
//!
//! ```text
//! n̂ = f / (‖f‖₂ + eps)          (over channels, per pixel; eps = 1e-10 as the reference)
//! d(x) = mean_pixels Σ_c w_c (n̂a_c − n̂b_c)²
//! ```
//! Channels-last makes every per-pixel reduction a contiguous run of `C` values.
//!
//! Backward, per pixel with `g = ∂L/∂d(sample) / pixels`, `u_c = 2 w_c (n̂a_c − n̂b_c) g` and
//! `s = ‖f‖ + eps`: `∂L/∂fa = u/sa − n̂a (u·n̂a)/‖fa‖`, and the same with `−u` for `fb`. Where
//! `‖f‖ = 0` (every channel of a ReLU output is 0) the second term is taken as 0: PyTorch gets a
//! NaN there from `sqrt`'s backward, which the preceding ReLU's backward then zeroes, so the
//! input gradient is the same.

use rayon::prelude::*;

/// The reference's `normalize_tensor` epsilon.
pub const NORMALIZE_EPS: f32 = 1e-10;

/// Pixels per rayon task.
const BLOCK: usize = 256;

/// `n` samples of `pixels` pixels with `channels` channels each.
#[derive(Debug, Clone, Copy)]
pub struct LayerDims {
    pub n: usize,
    pub pixels: usize,
    pub channels: usize,
}

impl LayerDims {
    pub fn len(&self) -> usize {
        self.n * self.pixels * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `(‖f‖, 1 / (‖f‖ + eps))` of one pixel.
#[inline]
fn norm_and_inv(f: &[f32]) -> (f32, f32) {
    let r = f.iter().map(|v| v * v).sum::<f32>().sqrt();
    (r, 1.0 / (r + NORMALIZE_EPS))
}

/// `Σ_c w_c (n̂a_c − n̂b_c)²` of one pixel.
#[inline]
fn pixel_distance(a: &[f32], b: &[f32], w: &[f32]) -> f32 {
    let (_, ia) = norm_and_inv(a);
    let (_, ib) = norm_and_inv(b);
    a.iter()
        .zip(b)
        .zip(w)
        .map(|((&a, &b), &w)| {
            let t = a * ia - b * ib;
            w * t * t
        })
        .sum()
}

/// Adds each sample's distance into `out[sample]` (f64: a mean over up to 10⁵ pixels).
/// Blocks are summed in a fixed order, so the result does not depend on thread scheduling.
pub fn layer_distance(d: &LayerDims, fa: &[f32], fb: &[f32], w: &[f32], out: &mut [f64]) {
    debug_assert!(fa.len() == d.len() && fb.len() == d.len() && w.len() == d.channels);
    let per_sample = d.pixels * d.channels;
    if per_sample == 0 {
        return;
    }
    for (s, o) in out.iter_mut().enumerate().take(d.n) {
        let range = s * per_sample..(s + 1) * per_sample;
        let partial: Vec<f64> = fa[range.clone()]
            .par_chunks(BLOCK * d.channels)
            .zip(fb[range].par_chunks(BLOCK * d.channels))
            .map(|(a, b)| {
                a.chunks_exact(d.channels)
                    .zip(b.chunks_exact(d.channels))
                    .map(|(a, b)| pixel_distance(a, b, w) as f64)
                    .sum::<f64>()
            })
            .collect();
        *o += partial.iter().sum::<f64>() / d.pixels as f64;
    }
}

/// One pixel's backward: adds into `ga` / `gb` (either may be absent).
#[inline]
fn pixel_backward(
    a: &[f32],
    b: &[f32],
    w: &[f32],
    g: f32,
    ga: Option<&mut [f32]>,
    gb: Option<&mut [f32]>,
) {
    let (ra, ia) = norm_and_inv(a);
    let (rb, ib) = norm_and_inv(b);
    // u·n̂a and u·n̂b, with u_c = 2 w_c (n̂a_c − n̂b_c) g.
    let (mut una, mut unb) = (0.0f32, 0.0f32);
    for ((&a, &b), &w) in a.iter().zip(b).zip(w) {
        let (na, nb) = (a * ia, b * ib);
        let u = 2.0 * w * (na - nb) * g;
        una += u * na;
        unb += u * nb;
    }
    let ka = if ra > 0.0 { una / ra } else { 0.0 };
    let kb = if rb > 0.0 { unb / rb } else { 0.0 };
    let u_at = |c: usize| 2.0 * w[c] * (a[c] * ia - b[c] * ib) * g;
    if let Some(ga) = ga {
        for (c, o) in ga.iter_mut().enumerate() {
            *o += u_at(c) * ia - a[c] * ia * ka;
        }
    }
    if let Some(gb) = gb {
        for (c, o) in gb.iter_mut().enumerate() {
            *o += -u_at(c) * ib + b[c] * ib * kb;
        }
    }
}

/// Adds `∂(Σ_s dp[s]·d_s)/∂fa` into `ga` and the same for `fb` into `gb` (each optional).
pub fn layer_distance_backward(
    d: &LayerDims,
    fa: &[f32],
    fb: &[f32],
    w: &[f32],
    dp: &[f32],
    ga: Option<&mut [f32]>,
    gb: Option<&mut [f32]>,
) {
    debug_assert!(fa.len() == d.len() && fb.len() == d.len() && w.len() == d.channels);
    debug_assert!(dp.len() == d.n);
    let c = d.channels;
    if d.is_empty() {
        return;
    }
    let step = BLOCK * c;
    // The block `i` covers pixels [i·BLOCK, (i+1)·BLOCK) of the whole batch.
    let work = |i: usize, mut ga: Option<&mut [f32]>, mut gb: Option<&mut [f32]>| {
        let start = i * BLOCK;
        let end = ((i + 1) * BLOCK).min(d.n * d.pixels);
        for (j, px) in (start..end).enumerate() {
            let g = dp[px / d.pixels] / d.pixels as f32;
            let off = px * c;
            pixel_backward(
                &fa[off..off + c],
                &fb[off..off + c],
                w,
                g,
                ga.as_deref_mut().map(|s| &mut s[j * c..(j + 1) * c]),
                gb.as_deref_mut().map(|s| &mut s[j * c..(j + 1) * c]),
            );
        }
    };
    match (ga, gb) {
        (Some(ga), Some(gb)) => ga
            .par_chunks_mut(step)
            .zip(gb.par_chunks_mut(step))
            .enumerate()
            .for_each(|(i, (a, b))| work(i, Some(a), Some(b))),
        (Some(ga), None) => ga
            .par_chunks_mut(step)
            .enumerate()
            .for_each(|(i, a)| work(i, Some(a), None)),
        (None, Some(gb)) => gb
            .par_chunks_mut(step)
            .enumerate()
            .for_each(|(i, b)| work(i, None, Some(b))),
        (None, None) => {}
    }
}
