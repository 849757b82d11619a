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

use medvae_kernels::Real;
use rayon::prelude::*;

/// The reference's `normalize_tensor` epsilon.
pub const NORMALIZE_EPS: f64 = 1e-10;

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
fn norm_and_inv<T: Real>(f: &[T]) -> (T, T) {
    let r = f.iter().map(|&v| v * v).sum::<T>().sqrt();
    (r, T::one() / (r + T::c(NORMALIZE_EPS)))
}

/// `Σ_c w_c (n̂a_c − n̂b_c)²` of one pixel.
#[inline]
fn pixel_distance<T: Real>(a: &[T], b: &[T], w: &[T]) -> T {
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
pub fn layer_distance<T: Real>(d: &LayerDims, fa: &[T], fb: &[T], w: &[T], out: &mut [f64]) {
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
                    .map(|(a, b)| pixel_distance(a, b, w).f64())
                    .sum::<f64>()
            })
            .collect();
        *o += partial.iter().sum::<f64>() / d.pixels as f64;
    }
}

/// One pixel's backward: adds into `ga` / `gb` (either may be absent).
#[inline]
fn pixel_backward<T: Real>(
    a: &[T],
    b: &[T],
    w: &[T],
    g: T,
    ga: Option<&mut [T]>,
    gb: Option<&mut [T]>,
) {
    let (ra, ia) = norm_and_inv(a);
    let (rb, ib) = norm_and_inv(b);
    let two_g = T::c(2.0) * g;
    // u·n̂a and u·n̂b, with u_c = 2 w_c (n̂a_c − n̂b_c) g.
    let (mut una, mut unb) = (T::zero(), T::zero());
    for ((&a, &b), &w) in a.iter().zip(b).zip(w) {
        let (na, nb) = (a * ia, b * ib);
        let u = two_g * w * (na - nb);
        una += u * na;
        unb += u * nb;
    }
    let zero = T::zero();
    let ka = if ra > zero { una / ra } else { zero };
    let kb = if rb > zero { unb / rb } else { zero };
    let u_at = |c: usize| two_g * w[c] * (a[c] * ia - b[c] * ib);
    if let Some(ga) = ga {
        for (c, o) in ga.iter_mut().enumerate() {
            *o += u_at(c) * ia - a[c] * ia * ka;
        }
    }
    if let Some(gb) = gb {
        for (c, o) in gb.iter_mut().enumerate() {
            *o += b[c] * ib * kb - u_at(c) * ib;
        }
    }
}

/// Adds `∂(Σ_s dp[s]·d_s)/∂fa` into `ga` and the same for `fb` into `gb` (each optional).
pub fn layer_distance_backward<T: Real>(
    d: &LayerDims,
    fa: &[T],
    fb: &[T],
    w: &[T],
    dp: &[T],
    ga: Option<&mut [T]>,
    gb: Option<&mut [T]>,
) {
    debug_assert!(fa.len() == d.len() && fb.len() == d.len() && w.len() == d.channels);
    debug_assert!(dp.len() == d.n);
    let c = d.channels;
    if d.is_empty() {
        return;
    }
    let step = BLOCK * c;
    // The block `i` covers pixels [i·BLOCK, (i+1)·BLOCK) of the whole batch.
    let inv_pixels = T::c(1.0 / d.pixels as f64);
    let work = |i: usize, mut ga: Option<&mut [T]>, mut gb: Option<&mut [T]>| {
        let start = i * BLOCK;
        let end = ((i + 1) * BLOCK).min(d.n * d.pixels);
        for (j, px) in (start..end).enumerate() {
            let g = dp[px / d.pixels] * inv_pixels;
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

#[cfg(test)]
mod tests {
    //! The distance's backward against f64 central differences (the function is smooth away
    //! from zero-norm pixels), and the zero-norm convention.
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn total(d: &LayerDims, fa: &[f64], fb: &[f64], w: &[f64], dp: &[f64]) -> f64 {
        let mut out = vec![0.0; d.n];
        layer_distance(d, fa, fb, w, &mut out);
        out.iter().zip(dp).map(|(p, g)| p * g).sum()
    }

    #[test]
    fn backward_matches_central_differences() {
        // Several blocks (pixels > BLOCK) and samples that straddle block boundaries.
        let d = LayerDims {
            n: 3,
            pixels: 300,
            channels: 5,
        };
        let mut s = 7;
        let mut rand = |len: usize| (0..len).map(|_| lcg(&mut s)).collect::<Vec<f64>>();
        let (fa, fb) = (rand(d.len()), rand(d.len()));
        let w: Vec<f64> = rand(d.channels).iter().map(|v| v.abs()).collect();
        let dp = rand(d.n);
        let (mut ga, mut gb) = (vec![0.0; d.len()], vec![0.0; d.len()]);
        layer_distance_backward(&d, &fa, &fb, &w, &dp, Some(&mut ga), Some(&mut gb));
        let h = 1e-6;
        for i in (0..d.len()).step_by(97) {
            for (which, g) in [(0, &ga), (1, &gb)] {
                let (mut a, mut b) = (fa.clone(), fb.clone());
                let x = if which == 0 { &mut a } else { &mut b };
                x[i] += h;
                let fp = total(&d, &a, &b, &w, &dp);
                let x = if which == 0 { &mut a } else { &mut b };
                x[i] -= 2.0 * h;
                let fm = total(&d, &a, &b, &w, &dp);
                let fd = (fp - fm) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() <= 1e-7 * (1.0 + g[i].abs()),
                    "element {i} of {}: fd {fd} vs analytic {}",
                    if which == 0 { "a" } else { "b" },
                    g[i]
                );
            }
        }
        // One side only gives the same values, and adds into what is there.
        let mut ga2 = vec![1.0; d.len()];
        layer_distance_backward(&d, &fa, &fb, &w, &dp, Some(&mut ga2), None);
        for (x, y) in ga2.iter().zip(&ga) {
            assert!((x - 1.0 - y).abs() < 1e-15);
        }
    }

    #[test]
    fn zero_norm_pixel_is_finite() {
        // A pixel whose features are all 0 (every ReLU off): finite values, first-order term.
        let d = LayerDims {
            n: 1,
            pixels: 1,
            channels: 3,
        };
        let (fa, fb, w) = ([0.0f32; 3], [1.0f32, 2.0, 2.0], [0.5f32; 3]);
        let mut out = [0.0];
        layer_distance(&d, &fa, &fb, &w, &mut out);
        assert!((out[0] - 0.5).abs() < 1e-6, "{out:?}");
        let mut ga = [0.0f32; 3];
        layer_distance_backward(&d, &fa, &fb, &w, &[1.0], Some(&mut ga), None);
        assert!(ga.iter().all(|v| v.is_finite()), "{ga:?}");
    }
}
