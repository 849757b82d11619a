//! LPIPS on channels-last features, forward and backward side by side: the scaling layer and
//! the per-layer normalised distance.
//!
//! ```text
//! scaling: y_c = (x_c − shift_c) / scale_c   (c < 3; a 1-channel image broadcasts to 3)
//! n̂ = f / (‖f‖₂ + eps)                       (over channels, per pixel; eps = 1e-10 as the reference)
//! d(sample) = mean_pixels Σ_c w_c (n̂a_c − n̂b_c)²
//! ```
//! Channels-last makes every per-pixel reduction a contiguous run of `C` values.
//!
//! Distance backward, per pixel with `g = ∂L/∂d(sample) / pixels`, `u_c = 2 w_c (n̂a_c − n̂b_c) g`
//! and `s = ‖f‖ + eps`: `∂L/∂fa = u/sa − n̂a (u·n̂a)/‖fa‖`, and the same with `−u` for `fb`. Where
//! `‖f‖ = 0` (every channel of a ReLU output is 0) the second term is taken as 0: PyTorch gets a
//! NaN there from `sqrt`'s backward, which the preceding ReLU's backward then zeroes, so the
//! input gradient is the same.

use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// The reference's `normalize_tensor` epsilon.
pub const NORMALIZE_EPS: f64 = 1e-10;

/// Pixels per rayon task.
const BLOCK: usize = 256;

/// `n` samples of `pixels` pixels with `channels` channels each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LpipsDims {
    pub n: usize,
    pub pixels: usize,
    pub channels: usize,
}

impl LpipsDims {
    /// Elements of one feature operand.
    pub fn len(&self) -> usize {
        self.n * self.pixels * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(
        &self,
        kernel: &'static str,
        fa: usize,
        fb: usize,
        w: usize,
    ) -> Result<(), KernelError> {
        check_len(kernel, "fa", fa, self.len())?;
        check_len(kernel, "fb", fb, self.len())?;
        check_len(kernel, "w", w, self.channels)
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

/// Adds each sample's distance into `out[sample]`. A sample's pixel sum is taken in f64 (a mean
/// over up to 10⁵ pixels) and its blocks are added in a fixed order, so the result does not
/// depend on thread scheduling.
pub fn lpips_distance_forward<T: Real>(
    d: &LpipsDims,
    fa: &[T],
    fb: &[T],
    w: &[T],
    out: &mut [T],
) -> Result<(), KernelError> {
    d.check("lpips_distance_forward", fa.len(), fb.len(), w.len())?;
    check_len("lpips_distance_forward", "out", out.len(), d.n)?;
    let per_sample = d.pixels * d.channels;
    if per_sample == 0 {
        return Ok(());
    }
    for (s, o) in out.iter_mut().enumerate() {
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
        *o += T::c(partial.iter().sum::<f64>() / d.pixels as f64);
    }
    Ok(())
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
pub fn lpips_distance_backward<T: Real>(
    d: &LpipsDims,
    fa: &[T],
    fb: &[T],
    w: &[T],
    dp: &[T],
    ga: Option<&mut [T]>,
    gb: Option<&mut [T]>,
) -> Result<(), KernelError> {
    const KERNEL: &str = "lpips_distance_backward";
    d.check(KERNEL, fa.len(), fb.len(), w.len())?;
    check_len(KERNEL, "dp", dp.len(), d.n)?;
    if let Some(g) = ga.as_deref() {
        check_len(KERNEL, "ga", g.len(), d.len())?;
    }
    if let Some(g) = gb.as_deref() {
        check_len(KERNEL, "gb", g.len(), d.len())?;
    }
    let c = d.channels;
    if d.is_empty() {
        return Ok(());
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
    Ok(())
}

/// The reference's `ScalingLayer` constants: per-channel shift and scale of a 3-channel image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LpipsScaling {
    pub shift: [f32; 3],
    pub scale: [f32; 3],
}

fn check_image_channels(kernel: &'static str, cin: usize) -> Result<(), KernelError> {
    if cin == 1 || cin == 3 {
        Ok(())
    } else {
        Err(KernelError::Geometry {
            kernel,
            msg: format!("the scaling layer takes 1 or 3 channels, got {cin}"),
        })
    }
}

/// `y[p, c] = (x[p, c or 0] − shift_c) / scale_c` for `pixels` pixels of `cin` (1 or 3)
/// channels into `y` of 3 channels (overwritten).
pub fn lpips_scaling_forward<T: Real>(
    s: &LpipsScaling,
    pixels: usize,
    cin: usize,
    x: &[T],
    y: &mut [T],
) -> Result<(), KernelError> {
    const KERNEL: &str = "lpips_scaling_forward";
    check_image_channels(KERNEL, cin)?;
    check_len(KERNEL, "x", x.len(), pixels * cin)?;
    check_len(KERNEL, "y", y.len(), pixels * 3)?;
    let shift = s.shift.map(|v| T::c(v as f64));
    let scale = s.scale.map(|v| T::c(v as f64));
    for (px, out) in x.chunks_exact(cin).zip(y.chunks_exact_mut(3)) {
        for ch in 0..3 {
            out[ch] = (px[if cin == 1 { 0 } else { ch }] - shift[ch]) / scale[ch];
        }
    }
    Ok(())
}

/// The scaling layer's backward: `dx` of `cin` channels (overwritten) from `dy` of 3; a
/// 1-channel input sums its three broadcast channels.
pub fn lpips_scaling_backward<T: Real>(
    s: &LpipsScaling,
    pixels: usize,
    cin: usize,
    dy: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    const KERNEL: &str = "lpips_scaling_backward";
    check_image_channels(KERNEL, cin)?;
    check_len(KERNEL, "dy", dy.len(), pixels * 3)?;
    check_len(KERNEL, "dx", dx.len(), pixels * cin)?;
    let scale = s.scale.map(|v| T::c(v as f64));
    for (g, out) in dy.chunks_exact(3).zip(dx.chunks_exact_mut(cin)) {
        if cin == 1 {
            out[0] = g[0] / scale[0] + g[1] / scale[1] + g[2] / scale[2];
        } else {
            for ch in 0..3 {
                out[ch] = g[ch] / scale[ch];
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The distance's backward against f64 central differences (the function is smooth away
    //! from zero-norm pixels), the zero-norm convention, and the scaling layer's adjoint.
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    fn total(d: &LpipsDims, fa: &[f64], fb: &[f64], w: &[f64], dp: &[f64]) -> f64 {
        let mut out = vec![0.0; d.n];
        lpips_distance_forward(d, fa, fb, w, &mut out).unwrap();
        out.iter().zip(dp).map(|(p, g)| p * g).sum()
    }

    #[test]
    fn backward_matches_central_differences() {
        // Several blocks (pixels > BLOCK) and samples that straddle block boundaries.
        let d = LpipsDims {
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
        lpips_distance_backward(&d, &fa, &fb, &w, &dp, Some(&mut ga), Some(&mut gb)).unwrap();
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
        lpips_distance_backward(&d, &fa, &fb, &w, &dp, Some(&mut ga2), None).unwrap();
        for (x, y) in ga2.iter().zip(&ga) {
            assert!((x - 1.0 - y).abs() < 1e-15);
        }
    }

    #[test]
    fn zero_norm_pixel_is_finite() {
        // A pixel whose features are all 0 (every ReLU off): finite values, first-order term.
        let d = LpipsDims {
            n: 1,
            pixels: 1,
            channels: 3,
        };
        let (fa, fb, w) = ([0.0f32; 3], [1.0f32, 2.0, 2.0], [0.5f32; 3]);
        let mut out = [0.0f32];
        lpips_distance_forward(&d, &fa, &fb, &w, &mut out).unwrap();
        assert!((out[0] - 0.5).abs() < 1e-6, "{out:?}");
        let mut ga = [0.0f32; 3];
        lpips_distance_backward(&d, &fa, &fb, &w, &[1.0], Some(&mut ga), None).unwrap();
        assert!(ga.iter().all(|v| v.is_finite()), "{ga:?}");
    }

    #[test]
    fn lengths_are_checked() {
        let d = LpipsDims {
            n: 2,
            pixels: 4,
            channels: 3,
        };
        let f = vec![1.0f32; d.len()];
        let mut out = [0.0f32; 1];
        assert!(lpips_distance_forward(&d, &f, &f, &[1.0; 3], &mut out).is_err());
        let mut g = vec![0.0f32; d.len() - 1];
        assert!(
            lpips_distance_backward(&d, &f, &f, &[1.0; 3], &[1.0; 2], Some(&mut g), None).is_err()
        );
    }

    #[test]
    fn scaling_backward_is_the_adjoint() {
        // ⟨dy, J x⟩ = ⟨Jᵀ dy, x⟩ for both channel counts (the map is affine: J x = y(x) − y(0)).
        let s = LpipsScaling {
            shift: [-0.03, -0.088, -0.188],
            scale: [0.458, 0.448, 0.45],
        };
        let mut seed = 3;
        for cin in [1usize, 3] {
            let pixels = 5;
            let x: Vec<f64> = (0..pixels * cin).map(|_| lcg(&mut seed)).collect();
            let dy: Vec<f64> = (0..pixels * 3).map(|_| lcg(&mut seed)).collect();
            let (mut y, mut y0) = (vec![0.0; pixels * 3], vec![0.0; pixels * 3]);
            lpips_scaling_forward(&s, pixels, cin, &x, &mut y).unwrap();
            lpips_scaling_forward(&s, pixels, cin, &vec![0.0; x.len()], &mut y0).unwrap();
            let mut dx = vec![0.0; x.len()];
            lpips_scaling_backward(&s, pixels, cin, &dy, &mut dx).unwrap();
            let lhs: f64 = dy
                .iter()
                .zip(y.iter().zip(&y0))
                .map(|(g, (a, b))| g * (a - b))
                .sum();
            let rhs: f64 = dx.iter().zip(&x).map(|(g, v)| g * v).sum();
            assert!(
                (lhs - rhs).abs() < 1e-12 * (1.0 + lhs.abs()),
                "{cin}: {lhs} vs {rhs}"
            );
        }
        assert!(lpips_scaling_forward(&s, 1, 2, &[0.0f32; 2], &mut [0.0; 3]).is_err());
    }
}
