//! GroupNorm on channels-last `[N, S, C]` (S = D·H·W), forward and backward, plain and fused
//! with the SiLU that follows it in every ResnetBlock.
//!
//! Layout drives the algorithm: with C innermost, a group's elements are short strided runs,
//! so instead of walking one group at a time every pass streams whole rows of C channels and
//! keeps per-channel accumulators (vectorises over channels). Groups are formed from the
//! per-channel sums afterwards. Parallelism is over (sample, block of rows), which also works
//! for a batch of one. Statistics accumulate in f64 around a per-channel shift (the sample's
//! first row), so a large mean does not cancel the variance.
//!
//! Passes over memory: forward reads x twice (statistics, then normalise) and writes y once;
//! backward reads x and dy, then x and dy again (plain) or x and the scratch `dh` it wrote into
//! `dx` (fused), and writes dx. The fused forward saves only the statistics: backward recomputes
//! the pre-activation from x.
//!
//! The small argument structs here ([`Affine`], [`AffineGrads`], [`NormStats`],
//! [`NormStatsMut`]) are shared by the other normalisations.

use super::activation::{sigmoid, silu_grad, simd};
use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// Per-channel scale and shift of a normalisation layer (`weight`, `bias` in PyTorch).
#[derive(Clone, Copy, Debug)]
pub struct Affine<'a, T> {
    pub gamma: &'a [T],
    pub beta: &'a [T],
}

/// Gradients of [`Affine`]; backward kernels accumulate (`+=`) into them.
#[derive(Debug)]
pub struct AffineGrads<'a, T> {
    pub dgamma: &'a mut [T],
    pub dbeta: &'a mut [T],
}

/// Statistics a normalisation forward saves for its backward: mean and `1/√(var + eps)`.
#[derive(Clone, Copy, Debug)]
pub struct NormStats<'a, T> {
    pub mean: &'a [T],
    pub rstd: &'a [T],
}

/// Where a normalisation forward writes its [`NormStats`].
#[derive(Debug)]
pub struct NormStatsMut<'a, T> {
    pub mean: &'a mut [T],
    pub rstd: &'a mut [T],
}

/// Geometry of a GroupNorm call on a `[n, spatial, channels]` tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupNormDims {
    pub n: usize,
    /// D·H·W.
    pub spatial: usize,
    pub channels: usize,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNormDims {
    /// Elements of the activation.
    pub fn len(&self) -> usize {
        self.n * self.spatial * self.channels
    }

    /// Whether the activation has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of each saved statistic (`mean`, `rstd`): one per (sample, group).
    pub fn stats_len(&self) -> usize {
        self.n * self.groups
    }

    fn validate(&self, kernel: &'static str) -> Result<(), KernelError> {
        let bad = |msg: String| Err(KernelError::Geometry { kernel, msg });
        if self.spatial == 0 || self.channels == 0 || self.groups == 0 {
            return bad(format!("empty geometry {self:?}"));
        }
        if !self.channels.is_multiple_of(self.groups) {
            return bad(format!(
                "{} channels do not split into {} groups",
                self.channels, self.groups
            ));
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return bad(format!("eps must be >= 0, got {}", self.eps));
        }
        Ok(())
    }
}

/// Minimum elements per rayon task (below this, scheduling costs more than it saves).
const MIN_BLOCK_ELEMS: usize = 16 * 1024;

/// Rows per task: enough tasks for every thread a few times over, none of them tiny.
pub(crate) fn rows_per_block(n: usize, spatial: usize, channels: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let blocks_per_sample = (4 * threads).div_ceil(n.max(1)).max(1);
    let by_balance = spatial.div_ceil(blocks_per_sample);
    let by_size = MIN_BLOCK_ELEMS.div_ceil(channels.max(1));
    by_balance.max(by_size).clamp(1, spatial.max(1))
}

/// Channels per register tile in the statistics loops: 8 f64 sums and 8 f64 sums of squares
/// stay in vector registers (SSE2 and AVX2 alike) instead of memory.
const TILE_CH: usize = 8;

/// Elements per tile of rows: small enough to stay in L1 while each channel tile walks it.
const TILE_ELEMS: usize = 4096;

/// Accumulate per-channel `Σ (x − k)` into `sum` and `Σ (x − k)²` into `sq` over the rows of
/// `xs` (each `k.len()` wide), in f64. Tiles of rows × [`TILE_CH`] channels keep the
/// accumulators in registers.
#[inline(always)]
fn moments_into<T: Real>(xs: &[T], k: &[f64], sum: &mut [f64], sq: &mut [f64]) {
    let c = k.len();
    let tile_rows = (TILE_ELEMS / c).max(1);
    for tile in xs.chunks(tile_rows * c) {
        let mut c0 = 0;
        while c0 + TILE_CH <= c {
            let kk: [f64; TILE_CH] = std::array::from_fn(|j| k[c0 + j]);
            let mut s = [0.0f64; TILE_CH];
            let mut q = [0.0f64; TILE_CH];
            for row in tile.chunks_exact(c) {
                let Some(seg) = row[c0..].first_chunk::<TILE_CH>() else {
                    break;
                };
                for j in 0..TILE_CH {
                    let d = seg[j].f64() - kk[j];
                    s[j] += d;
                    q[j] += d * d;
                }
            }
            for j in 0..TILE_CH {
                sum[c0 + j] += s[j];
                sq[c0 + j] += q[j];
            }
            c0 += TILE_CH;
        }
        // Channels past the last full tile.
        for row in tile.chunks_exact(c) {
            for ch in c0..c {
                let d = row[ch].f64() - k[ch];
                sum[ch] += d;
                sq[ch] += d * d;
            }
        }
    }
}

/// Per-channel `(Σ (x − k), Σ (x − k)²)` over the rows of `xs` (each `k.len()` wide), in f64.
/// Returns `[sum; C] ++ [sum_sq; C]`.
pub(crate) fn shifted_moments<T: Real>(xs: &[T], k: &[f64]) -> Vec<f64> {
    let c = k.len();
    let mut acc = vec![0.0f64; 2 * c];
    let (sum, sq) = acc.split_at_mut(c);
    simd(#[inline(always)] || moments_into(xs, k, sum, sq));
    acc
}

/// Add `src` into `dst` element-wise.
pub(crate) fn add_into(dst: &mut [f64], src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Per-sample shifted channel moments of `x` `[n, s, c]`: for each sample the shift (its first
/// row) and `[Σ(x−k); C] ++ [Σ(x−k)²; C]`, partial sums added in block order (deterministic).
fn sample_moments<T: Real>(x: &[T], n: usize, s: usize, c: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
    let block = rows_per_block(n, s, c) * c;
    x.par_chunks(s * c)
        .map(|xs| {
            let k: Vec<f64> = xs[..c].iter().map(|v| v.f64()).collect();
            let parts: Vec<Vec<f64>> = xs
                .par_chunks(block)
                .map(|b| shifted_moments(b, &k))
                .collect();
            let mut acc = vec![0.0f64; 2 * c];
            for p in &parts {
                add_into(&mut acc, p);
            }
            (k, acc)
        })
        .collect()
}

/// Group mean and biased variance from shifted per-channel moments: the group is the channels
/// in `range`, `rows` rows each.
fn group_mean_var_from_moments(
    k: &[f64],
    acc: &[f64],
    range: std::ops::Range<usize>,
    rows: usize,
) -> (f64, f64) {
    let c = k.len();
    let (sum, sq) = acc.split_at(c);
    let count = (rows * range.len()) as f64;
    let total: f64 = range.clone().map(|ch| rows as f64 * k[ch] + sum[ch]).sum();
    let mean = total / count;
    // Σ(x − mean)² = Σ[(x − k) + (k − mean)]² per channel.
    let ss: f64 = range
        .map(|ch| {
            let delta = k[ch] - mean;
            sq[ch] + 2.0 * delta * sum[ch] + rows as f64 * delta * delta
        })
        .sum();
    (mean, (ss / count).max(0.0))
}

/// `y = act(x·a + b)` row by row, with per-channel `a`, `b` (rows are `a.len()` wide).
#[inline(always)]
fn affine_rows<T: Real, const SILU: bool>(x: &[T], y: &mut [T], a: &[T], b: &[T]) {
    let c = a.len();
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for (((o, &v), &ac), &bc) in yr.iter_mut().zip(xr).zip(a).zip(b) {
            let h = v * ac + bc;
            *o = if SILU { h * sigmoid(h) } else { h };
        }
    }
}

/// Backward pass 2 row by row: `dx = dh·p + x·q + o` per channel, where `dh` is `dy` (plain)
/// or was stored in `dx` by pass 1 (fused).
#[inline(always)]
fn combine_rows<T: Real, const SILU: bool>(dx: &mut [T], x: &[T], dy: &[T], p: &[T], q: &[T], o: &[T]) {
    let c = p.len();
    let coef = || p.iter().zip(q).zip(o);
    for ((dr, xr), gr) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c)) {
        if SILU {
            for ((d, &xv), ((&pv, &qv), &ov)) in dr.iter_mut().zip(xr).zip(coef()) {
                *d = *d * pv + xv * qv + ov;
            }
        } else {
            for (((d, &xv), &g), ((&pv, &qv), &ov)) in dr.iter_mut().zip(xr).zip(gr).zip(coef()) {
                *d = g * pv + xv * qv + ov;
            }
        }
    }
}

/// `y = act(x·a + b)` over `[n, s, c]` with per-(sample, channel) coefficients
/// `coef[n] = ([a; C], [b; C])`.
pub(crate) fn apply_affine<T: Real, const SILU: bool>(
    x: &[T],
    y: &mut [T],
    coef: &[(Vec<T>, Vec<T>)],
    s: usize,
    c: usize,
) {
    let block = rows_per_block(coef.len(), s, c) * c;
    y.par_chunks_mut(s * c)
        .zip(x.par_chunks(s * c))
        .zip(coef.par_iter())
        .for_each(|((ys, xs), (a, b))| {
            ys.par_chunks_mut(block)
                .zip(xs.par_chunks(block))
                .for_each(|(yb, xb)| simd(#[inline(always)] || affine_rows::<T, SILU>(xb, yb, a, b)));
        });
}

fn check_forward<T>(
    kernel: &'static str,
    d: &GroupNormDims,
    x: &[T],
    affine: &Affine<T>,
    y: &[T],
    stats: &NormStatsMut<T>,
) -> Result<(), KernelError> {
    d.validate(kernel)?;
    check_len(kernel, "x", x.len(), d.len())?;
    check_len(kernel, "y", y.len(), d.len())?;
    check_len(kernel, "gamma", affine.gamma.len(), d.channels)?;
    check_len(kernel, "beta", affine.beta.len(), d.channels)?;
    check_len(kernel, "mean", stats.mean.len(), d.stats_len())?;
    check_len(kernel, "rstd", stats.rstd.len(), d.stats_len())
}

/// Mean and biased variance per (sample, group), in f64, laid out `[n, groups]`.
pub(crate) fn group_mean_var<T: Real>(d: &GroupNormDims, x: &[T]) -> Vec<(f64, f64)> {
    let (s, c, g) = (d.spatial, d.channels, d.groups);
    let cg = c / g;
    let mut out = Vec::with_capacity(d.n * g);
    for (k, acc) in sample_moments(x, d.n, s, c) {
        for gi in 0..g {
            out.push(group_mean_var_from_moments(&k, &acc, gi * cg..(gi + 1) * cg, s));
        }
    }
    out
}

/// Normalise `x` with the given per-(sample, group) mean and variance, write `y` (optionally
/// through SiLU) and the saved statistics.
pub(crate) fn normalize<T: Real, const SILU: bool>(
    d: &GroupNormDims,
    x: &[T],
    affine: Affine<T>,
    mean_var: &[(f64, f64)],
    y: &mut [T],
    stats: NormStatsMut<T>,
) {
    let (s, c, g) = (d.spatial, d.channels, d.groups);
    let cg = c / g;
    let mut coef = Vec::with_capacity(d.n);
    for ni in 0..d.n {
        let mut a = vec![T::zero(); c];
        let mut b = vec![T::zero(); c];
        for gi in 0..g {
            let (mean, var) = mean_var[ni * g + gi];
            let rstd = 1.0 / (var + d.eps).sqrt();
            stats.mean[ni * g + gi] = T::c(mean);
            stats.rstd[ni * g + gi] = T::c(rstd);
            for ch in gi * cg..(gi + 1) * cg {
                let ac = rstd * affine.gamma[ch].f64();
                a[ch] = T::c(ac);
                b[ch] = T::c(affine.beta[ch].f64() - mean * ac);
            }
        }
        coef.push((a, b));
    }
    apply_affine::<T, SILU>(x, y, &coef, s, c);
}

/// GroupNorm forward: `y = (x − μ_g)·rstd_g·γ_c + β_c`; saves `mean`, `rstd` per
/// (sample, group) for the backward.
pub fn group_norm_forward<T: Real>(
    d: &GroupNormDims,
    x: &[T],
    affine: Affine<T>,
    y: &mut [T],
    stats: NormStatsMut<T>,
) -> Result<(), KernelError> {
    check_forward("group_norm_forward", d, x, &affine, y, &stats)?;
    if d.n > 0 {
        let mean_var = group_mean_var(d, x);
        normalize::<T, false>(d, x, affine, &mean_var, y, stats);
    }
    Ok(())
}

/// Fused GroupNorm + SiLU forward: `y = silu(group_norm(x))`, one pass fewer than the two
/// kernels. Saves only `mean`, `rstd`; [`group_norm_silu_backward`] recomputes the rest from x.
pub fn group_norm_silu_forward<T: Real>(
    d: &GroupNormDims,
    x: &[T],
    affine: Affine<T>,
    y: &mut [T],
    stats: NormStatsMut<T>,
) -> Result<(), KernelError> {
    check_forward("group_norm_silu_forward", d, x, &affine, y, &stats)?;
    if d.n > 0 {
        let mean_var = group_mean_var(d, x);
        normalize::<T, true>(d, x, affine, &mean_var, y, stats);
    }
    Ok(())
}

/// Pass 1 of the backward over one block of rows: per-channel `Σ dh` and `Σ dh·(x − μ_c)`
/// (μ_c = the mean of the channel's group), returned as `[Σ dh; C] ++ [Σ dh·(x − μ); C]`. For
/// the fused kernel `dh = dy·silu'(x·a + b)` is also stored in `scratch` (the caller's dx) for
/// pass 2; otherwise `dh = dy` and `scratch` is untouched.
fn backward_sums<T: Real, const SILU: bool>(
    xb: &[T],
    dyb: &[T],
    scratch: &mut [T],
    mu: &[f64],
    coef: &(Vec<T>, Vec<T>),
) -> Vec<f64> {
    let c = mu.len();
    let mut acc = vec![0.0f64; 2 * c];
    let (sdh, sdhx) = acc.split_at_mut(c);
    simd(#[inline(always)] || backward_sums_into::<T, SILU>(xb, dyb, scratch, mu, coef, sdh, sdhx));
    acc
}

/// Tiled body of [`backward_sums`] (rows × [`TILE_CH`] channels, accumulators in registers).
#[inline(always)]
fn backward_sums_into<T: Real, const SILU: bool>(
    xb: &[T],
    dyb: &[T],
    scratch: &mut [T],
    mu: &[f64],
    (a, b): &(Vec<T>, Vec<T>),
    sdh: &mut [f64],
    sdhx: &mut [f64],
) {
    let c = mu.len();
    // d(pre-activation) of one element.
    let dh_of = |x: T, g: T, ch: usize| if SILU { g * silu_grad(x * a[ch] + b[ch]) } else { g };
    let tile = (TILE_ELEMS / c).max(1) * c;
    for ((xt, gt), st) in xb.chunks(tile).zip(dyb.chunks(tile)).zip(scratch.chunks_mut(tile)) {
        let mut c0 = 0;
        while c0 + TILE_CH <= c {
            let (aa, bb): ([T; TILE_CH], [T; TILE_CH]) = if SILU {
                (std::array::from_fn(|j| a[c0 + j]), std::array::from_fn(|j| b[c0 + j]))
            } else {
                ([T::zero(); TILE_CH], [T::zero(); TILE_CH])
            };
            let mm: [f64; TILE_CH] = std::array::from_fn(|j| mu[c0 + j]);
            let mut s = [0.0f64; TILE_CH];
            let mut q = [0.0f64; TILE_CH];
            for ((xr, gr), sr) in xt.chunks_exact(c).zip(gt.chunks_exact(c)).zip(st.chunks_exact_mut(c)) {
                let (Some(xs), Some(gs)) = (xr[c0..].first_chunk::<TILE_CH>(), gr[c0..].first_chunk::<TILE_CH>()) else {
                    break;
                };
                let mut dh = [T::zero(); TILE_CH];
                for j in 0..TILE_CH {
                    dh[j] = if SILU { gs[j] * silu_grad(xs[j] * aa[j] + bb[j]) } else { gs[j] };
                    let d = dh[j].f64();
                    s[j] += d;
                    q[j] += d * (xs[j].f64() - mm[j]);
                }
                if SILU {
                    if let Some(ss) = sr[c0..].first_chunk_mut::<TILE_CH>() {
                        *ss = dh;
                    }
                }
            }
            for j in 0..TILE_CH {
                sdh[c0 + j] += s[j];
                sdhx[c0 + j] += q[j];
            }
            c0 += TILE_CH;
        }
        // Channels past the last full tile.
        for ((xr, gr), sr) in xt.chunks_exact(c).zip(gt.chunks_exact(c)).zip(st.chunks_exact_mut(c)) {
            for ch in c0..c {
                let dh = dh_of(xr[ch], gr[ch], ch);
                if SILU {
                    sr[ch] = dh;
                }
                let d = dh.f64();
                sdh[ch] += d;
                sdhx[ch] += d * (xr[ch].f64() - mu[ch]);
            }
        }
    }
}

/// GroupNorm(+SiLU) backward without argument checks. `beta` is only read when `SILU` (to
/// recompute the pre-activation); the plain kernel may pass an empty slice.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_impl<T: Real, const SILU: bool>(
    d: &GroupNormDims,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    stats: NormStats<T>,
    dy: &[T],
    dx: &mut [T],
    grads: AffineGrads<T>,
) {
    let (s, c, g) = (d.spatial, d.channels, d.groups);
    let cg = c / g;
    let per = s * c;
    let block = rows_per_block(d.n, s, c) * c;
    // Per-(sample, channel) forward coefficients a = rstd·γ, b = β − μ·a (for recomputing the
    // pre-activation) and the group mean broadcast per channel.
    let mut coef = Vec::with_capacity(d.n);
    let mut mus = Vec::with_capacity(d.n);
    for ni in 0..d.n {
        let mut a = vec![T::zero(); c];
        let mut b = vec![T::zero(); c];
        let mut mu = vec![0.0f64; c];
        for ch in 0..c {
            let gi = ni * g + ch / cg;
            let (mean, rstd) = (stats.mean[gi].f64(), stats.rstd[gi].f64());
            mu[ch] = mean;
            if SILU {
                let ac = rstd * gamma[ch].f64();
                a[ch] = T::c(ac);
                b[ch] = T::c(beta[ch].f64() - mean * ac);
            }
        }
        coef.push((a, b));
        mus.push(mu);
    }

    // Pass 1: sums (and dh into dx for the fused kernel).
    let sums: Vec<Vec<f64>> = dx
        .par_chunks_mut(per)
        .zip(x.par_chunks(per).zip(dy.par_chunks(per)))
        .zip(coef.par_iter().zip(mus.par_iter()))
        .map(|((dxs, (xs, dys)), (cf, mu))| {
            let parts: Vec<Vec<f64>> = dxs
                .par_chunks_mut(block)
                .zip(xs.par_chunks(block).zip(dys.par_chunks(block)))
                .map(|(sb, (xb, gb))| backward_sums::<T, SILU>(xb, gb, sb, mu, cf))
                .collect();
            let mut acc = vec![0.0f64; 2 * c];
            for p in &parts {
                add_into(&mut acc, p);
            }
            acc
        })
        .collect();

    // Group reductions → dx = dh·p_c + x·q_c + o_c; parameter gradients.
    let count = (s * cg) as f64;
    let mut lin = Vec::with_capacity(d.n);
    for (ni, acc) in sums.iter().enumerate() {
        let (sdh, sdhx) = acc.split_at(c);
        let mut p = vec![T::zero(); c];
        let mut q = vec![T::zero(); c];
        let mut o = vec![T::zero(); c];
        for gi in 0..g {
            let (mean, rstd) = (stats.mean[ni * g + gi].f64(), stats.rstd[ni * g + gi].f64());
            let range = gi * cg..(gi + 1) * cg;
            // A = mean of dxhat, B = mean of dxhat·xhat over the group.
            let mut a_sum = 0.0;
            let mut b_sum = 0.0;
            for ch in range.clone() {
                let gm = gamma[ch].f64();
                a_sum += gm * sdh[ch];
                b_sum += gm * rstd * sdhx[ch];
                grads.dbeta[ch] += T::c(sdh[ch]);
                grads.dgamma[ch] += T::c(rstd * sdhx[ch]);
            }
            let (a_mean, b_mean) = (a_sum / count, b_sum / count);
            let qg = -rstd * rstd * b_mean;
            let og = -rstd * a_mean - qg * mean;
            for ch in range {
                p[ch] = T::c(rstd * gamma[ch].f64());
                q[ch] = T::c(qg);
                o[ch] = T::c(og);
            }
        }
        lin.push((p, q, o));
    }

    // Pass 2.
    dx.par_chunks_mut(per)
        .zip(x.par_chunks(per).zip(dy.par_chunks(per)))
        .zip(lin.par_iter())
        .for_each(|((dxs, (xs, dys)), (p, q, o))| {
            dxs.par_chunks_mut(block)
                .zip(xs.par_chunks(block).zip(dys.par_chunks(block)))
                .for_each(|(db, (xb, gb))| simd(#[inline(always)] || combine_rows::<T, SILU>(db, xb, gb, p, q, o)));
        });
}

/// Lengths every GroupNorm backward needs (gamma, statistics, gradients, activations).
#[allow(clippy::too_many_arguments)]
fn check_backward<T>(
    kernel: &'static str,
    d: &GroupNormDims,
    x: &[T],
    gamma: &[T],
    stats: &NormStats<T>,
    dy: &[T],
    dx: &[T],
    grads: &AffineGrads<T>,
) -> Result<(), KernelError> {
    d.validate(kernel)?;
    check_len(kernel, "x", x.len(), d.len())?;
    check_len(kernel, "dy", dy.len(), d.len())?;
    check_len(kernel, "dx", dx.len(), d.len())?;
    check_len(kernel, "gamma", gamma.len(), d.channels)?;
    check_len(kernel, "mean", stats.mean.len(), d.stats_len())?;
    check_len(kernel, "rstd", stats.rstd.len(), d.stats_len())?;
    check_len(kernel, "dgamma", grads.dgamma.len(), d.channels)?;
    check_len(kernel, "dbeta", grads.dbeta.len(), d.channels)
}

/// GroupNorm backward from the forward input and saved statistics: overwrites `dx`,
/// accumulates `dgamma`, `dbeta`.
pub fn group_norm_backward<T: Real>(
    d: &GroupNormDims,
    x: &[T],
    gamma: &[T],
    stats: NormStats<T>,
    dy: &[T],
    dx: &mut [T],
    grads: AffineGrads<T>,
) -> Result<(), KernelError> {
    check_backward("group_norm_backward", d, x, gamma, &stats, dy, dx, &grads)?;
    if d.n > 0 {
        backward_impl::<T, false>(d, x, gamma, &[], stats, dy, dx, grads);
    }
    Ok(())
}

/// Fused GroupNorm + SiLU backward: from `dy` = d(silu output) to `dx` (overwritten),
/// `dgamma`, `dbeta` (accumulated), recomputing the pre-activation from `x` and the saved
/// statistics. `dx` doubles as scratch for d(pre-activation) between the two passes.
pub fn group_norm_silu_backward<T: Real>(
    d: &GroupNormDims,
    x: &[T],
    affine: Affine<T>,
    stats: NormStats<T>,
    dy: &[T],
    dx: &mut [T],
    grads: AffineGrads<T>,
) -> Result<(), KernelError> {
    let kernel = "group_norm_silu_backward";
    check_backward(kernel, d, x, affine.gamma, &stats, dy, dx, &grads)?;
    check_len(kernel, "beta", affine.beta.len(), d.channels)?;
    if d.n > 0 {
        backward_impl::<T, true>(d, x, affine.gamma, affine.beta, stats, dy, dx, grads);
    }
    Ok(())
}
