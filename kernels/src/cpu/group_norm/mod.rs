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
//! the pre-activation from x. The vectorised row loops of these passes are in `passes`.
//!
//! The small argument structs here ([`Affine`], [`AffineGrads`], [`NormStats`],
//! [`NormStatsMut`]) are shared by the other normalisations.

use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

mod passes;

pub(crate) use passes::{add_into, apply_affine, rows_per_block};
use passes::{backward_sums, combine_pass, group_mean_var_from_moments, sample_moments};

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
            out.push(group_mean_var_from_moments(
                &k,
                &acc,
                gi * cg..(gi + 1) * cg,
                s,
            ));
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

/// GroupNorm(+SiLU) backward without argument checks. `beta` is only read when `SILU` (to
/// recompute the pre-activation); the plain kernel may pass an empty slice. `dy` is `None` in
/// place: the incoming gradient is in `dx` and is overwritten by the result.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_impl<T: Real, const SILU: bool>(
    d: &GroupNormDims,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    stats: NormStats<T>,
    dy: Option<&[T]>,
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
        .zip(x.par_chunks(per))
        .zip(coef.par_iter().zip(mus.par_iter()))
        .enumerate()
        .map(|(ni, ((dxs, xs), (cf, mu)))| {
            let dys = dy.map(|d| &d[ni * per..(ni + 1) * per]);
            let parts: Vec<Vec<f64>> = dxs
                .par_chunks_mut(block)
                .zip(xs.par_chunks(block))
                .enumerate()
                .map(|(bi, (sb, xb))| {
                    let gb = dys.map(|d| &d[bi * block..bi * block + sb.len()]);
                    backward_sums::<T, SILU>(xb, gb, sb, mu, cf)
                })
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
    // Parameter gradients summed over samples in f64, rounded once.
    let (mut dgamma, mut dbeta) = (vec![0.0f64; c], vec![0.0f64; c]);
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
                dbeta[ch] += sdh[ch];
                dgamma[ch] += rstd * sdhx[ch];
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
    for ch in 0..c {
        grads.dgamma[ch] += T::c(dgamma[ch]);
        grads.dbeta[ch] += T::c(dbeta[ch]);
    }

    // Pass 2.
    combine_pass::<T, SILU>(dx, x, dy, &lin, s, c, block);
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
        backward_impl::<T, false>(d, x, gamma, &[], stats, Some(dy), dx, grads);
    }
    Ok(())
}

/// [`group_norm_backward`] in place: `grad` holds `dy` on entry and `dx` on return (no second
/// activation-sized buffer).
pub fn group_norm_backward_in_place<T: Real>(
    d: &GroupNormDims,
    x: &[T],
    gamma: &[T],
    stats: NormStats<T>,
    grad: &mut [T],
    grads: AffineGrads<T>,
) -> Result<(), KernelError> {
    let kernel = "group_norm_backward_in_place";
    check_backward(kernel, d, x, gamma, &stats, grad, grad, &grads)?;
    if d.n > 0 {
        backward_impl::<T, false>(d, x, gamma, &[], stats, None, grad, grads);
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
        backward_impl::<T, true>(d, x, affine.gamma, affine.beta, stats, Some(dy), dx, grads);
    }
    Ok(())
}

/// [`group_norm_silu_backward`] in place: `grad` holds d(silu output) on entry and `dx` on
/// return; pass 1 overwrites each element with d(pre-activation) after reading it.
pub fn group_norm_silu_backward_in_place<T: Real>(
    d: &GroupNormDims,
    x: &[T],
    affine: Affine<T>,
    stats: NormStats<T>,
    grad: &mut [T],
    grads: AffineGrads<T>,
) -> Result<(), KernelError> {
    let kernel = "group_norm_silu_backward_in_place";
    check_backward(kernel, d, x, affine.gamma, &stats, grad, grad, &grads)?;
    check_len(kernel, "beta", affine.beta.len(), d.channels)?;
    if d.n > 0 {
        backward_impl::<T, true>(d, x, affine.gamma, affine.beta, stats, None, grad, grads);
    }
    Ok(())
}
