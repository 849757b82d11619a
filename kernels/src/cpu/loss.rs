//! Loss kernels, forward and backward: KL of a diagonal Gaussian to N(0, 1), the hinge
//! discriminator loss, and L1 (mean and sum). Reductions accumulate in f64.

use super::activation::map_binary;
use super::reduce::{par_sum_mapped2_f64, par_sum_mapped_f64};
use crate::error::check_len;
use crate::{volume, KernelError, Real, Spatial};
use rayon::prelude::*;

/// The reference (latent-diffusion's `DiagonalGaussianDistribution`) clamps the log-variance.
const LOGVAR_MIN: f64 = -30.0;
const LOGVAR_MAX: f64 = 20.0;

/// Geometry of the KL kernels. `moments` is channels-last `[n, spatial, 2·z_channels]`: the
/// first `z_channels` are the mean, the last the log-variance (`torch.chunk(moments, 2, 1)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KlDims {
    pub n: usize,
    pub spatial: Spatial,
    pub z_channels: usize,
    /// Sum over channels, D and H but keep W: the output is `[n, w]`. This is what the
    /// reference's 3D `kl()` returns (it sums dims `[1, 2, 3]` of NCDHW). Otherwise the output
    /// is one value per sample.
    pub keep_last_axis: bool,
}

impl KlDims {
    /// Elements of `moments`.
    pub fn moments_len(&self) -> usize {
        self.n * volume(self.spatial) * 2 * self.z_channels
    }

    /// Elements of the KL output: `n`, or `n·w` with `keep_last_axis`.
    pub fn out_len(&self) -> usize {
        self.n * self.out_per_sample()
    }

    fn out_per_sample(&self) -> usize {
        if self.keep_last_axis {
            self.spatial[2]
        } else {
            1
        }
    }
}

/// `kl = ½·Σ (μ² + exp(lv) − 1 − lv)` with `lv` = log-variance clamped to `[−30, 20]`, summed
/// per sample (or per sample and W, see [`KlDims::keep_last_axis`]). Overwrites `kl`.
pub fn kl_diag_gaussian_forward<T: Real>(
    d: &KlDims,
    moments: &[T],
    kl: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "kl_diag_gaussian_forward";
    check_len(kernel, "moments", moments.len(), d.moments_len())?;
    check_len(kernel, "kl", kl.len(), d.out_len())?;
    let (cz, keep) = (d.z_channels, d.out_per_sample());
    let per = volume(d.spatial) * 2 * cz;
    if per == 0 {
        kl.fill(T::zero());
        return Ok(());
    }
    kl.par_chunks_mut(keep)
        .zip(moments.par_chunks(per))
        .for_each(|(out, m)| {
            let mut acc = vec![0.0f64; keep];
            for (cell, row) in m.chunks_exact(2 * cz).enumerate() {
                let (mean, logvar) = row.split_at(cz);
                let mut s = 0.0;
                for (&mu, &lv) in mean.iter().zip(logvar) {
                    let (mu, lv) = (mu.f64(), lv.f64().clamp(LOGVAR_MIN, LOGVAR_MAX));
                    s += mu * mu + lv.exp() - 1.0 - lv;
                }
                // Cells are (d, h, w) in order, so w is the cell index modulo W.
                acc[cell % keep] += s;
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = T::c(0.5 * a);
            }
        });
    Ok(())
}

/// KL backward: `dμ = dkl·μ`, `d lv = dkl·½·(exp(lv) − 1)` inside the clamp range and 0
/// outside it (overwrites `dmoments`).
pub fn kl_diag_gaussian_backward<T: Real>(
    d: &KlDims,
    moments: &[T],
    dkl: &[T],
    dmoments: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "kl_diag_gaussian_backward";
    check_len(kernel, "moments", moments.len(), d.moments_len())?;
    check_len(kernel, "dkl", dkl.len(), d.out_len())?;
    check_len(kernel, "dmoments", dmoments.len(), d.moments_len())?;
    let (cz, keep) = (d.z_channels, d.out_per_sample());
    let per = volume(d.spatial) * 2 * cz;
    if per == 0 {
        return Ok(());
    }
    dmoments
        .par_chunks_mut(per)
        .zip(moments.par_chunks(per).zip(dkl.par_chunks(keep)))
        .for_each(|(dm, (m, g))| {
            for (cell, (drow, row)) in dm
                .chunks_exact_mut(2 * cz)
                .zip(m.chunks_exact(2 * cz))
                .enumerate()
            {
                let g = g[cell % keep];
                let (dmean, dlogvar) = drow.split_at_mut(cz);
                let (mean, logvar) = row.split_at(cz);
                for (o, &mu) in dmean.iter_mut().zip(mean) {
                    *o = g * mu;
                }
                for (o, &lv) in dlogvar.iter_mut().zip(logvar) {
                    let lvf = lv.f64();
                    // torch.clamp passes the gradient on the closed range.
                    *o = if (LOGVAR_MIN..=LOGVAR_MAX).contains(&lvf) {
                        T::c(g.f64() * 0.5 * (lvf.exp() - 1.0))
                    } else {
                        T::zero()
                    };
                }
            }
        });
    Ok(())
}

fn non_empty(kernel: &'static str, what: &'static str, len: usize) -> Result<(), KernelError> {
    if len == 0 {
        return Err(KernelError::Geometry {
            kernel,
            msg: format!("{what} is empty (mean of nothing)"),
        });
    }
    Ok(())
}

/// Hinge discriminator loss `½·(mean(relu(1 − real)) + mean(relu(1 + fake)))`.
pub fn hinge_d_loss_forward<T: Real>(
    logits_real: &[T],
    logits_fake: &[T],
) -> Result<T, KernelError> {
    let kernel = "hinge_d_loss_forward";
    non_empty(kernel, "logits_real", logits_real.len())?;
    non_empty(kernel, "logits_fake", logits_fake.len())?;
    let real = par_sum_mapped_f64(logits_real, |v| (1.0 - v.f64()).max(0.0));
    let fake = par_sum_mapped_f64(logits_fake, |v| (1.0 + v.f64()).max(0.0));
    Ok(T::c(
        0.5 * (real / logits_real.len() as f64 + fake / logits_fake.len() as f64),
    ))
}

/// Hinge loss backward to both logits (overwrites `dreal`, `dfake`). At a kink the gradient
/// is 0, as PyTorch's relu gives.
pub fn hinge_d_loss_backward<T: Real>(
    logits_real: &[T],
    logits_fake: &[T],
    dloss: T,
    dreal: &mut [T],
    dfake: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "hinge_d_loss_backward";
    non_empty(kernel, "logits_real", logits_real.len())?;
    non_empty(kernel, "logits_fake", logits_fake.len())?;
    check_len(kernel, "dreal", dreal.len(), logits_real.len())?;
    check_len(kernel, "dfake", dfake.len(), logits_fake.len())?;
    let gr = T::c(-0.5 * dloss.f64() / logits_real.len() as f64);
    let gf = T::c(0.5 * dloss.f64() / logits_fake.len() as f64);
    super::activation::map_unary(logits_real, dreal, |v| {
        if T::one() - v > T::zero() {
            gr
        } else {
            T::zero()
        }
    });
    super::activation::map_unary(logits_fake, dfake, |v| {
        if T::one() + v > T::zero() {
            gf
        } else {
            T::zero()
        }
    });
    Ok(())
}

/// One half of the hinge loss as a sum, `Σ relu(1 + sign·x)` in f64 (sign −1: real logits,
/// +1: fake), for a discriminator that runs the two halves as separate passes.
pub fn hinge_half_forward<T: Real>(x: &[T], sign: T) -> Result<f64, KernelError> {
    non_empty("hinge_half_forward", "logits", x.len())?;
    Ok(par_sum_mapped_f64(x, |v| {
        (1.0 + sign.f64() * v.f64()).max(0.0)
    }))
}

/// `dx = g·sign` where `1 + sign·x > 0`, else 0 (overwrites `dx`; relu'(0) = 0 as PyTorch).
pub fn hinge_half_backward<T: Real>(
    x: &[T],
    sign: T,
    g: T,
    dx: &mut [T],
) -> Result<(), KernelError> {
    check_len("hinge_half_backward", "dx", dx.len(), x.len())?;
    let gs = g * sign;
    super::activation::map_unary(x, dx, |v| {
        if T::one() + sign * v > T::zero() {
            gs
        } else {
            T::zero()
        }
    });
    Ok(())
}

/// `Σ |a − b|` in f64, unrounded (a loss summed over 10⁵ pixels loses digits in f32).
pub fn l1_sum_exact<T: Real>(a: &[T], b: &[T]) -> Result<f64, KernelError> {
    l1_sum_f64("l1_sum_exact", a, b)
}

/// `Σ |a − b|` in f64.
fn l1_sum_f64<T: Real>(kernel: &'static str, a: &[T], b: &[T]) -> Result<f64, KernelError> {
    check_len(kernel, "b", b.len(), a.len())?;
    Ok(par_sum_mapped2_f64(a, b, |u, v| (u.f64() - v.f64()).abs()))
}

/// `da = g·sign(a − b)` with sign(0) = 0, as PyTorch's `abs` backward.
fn l1_grad<T: Real>(
    kernel: &'static str,
    a: &[T],
    b: &[T],
    g: T,
    da: &mut [T],
) -> Result<(), KernelError> {
    check_len(kernel, "b", b.len(), a.len())?;
    check_len(kernel, "da", da.len(), a.len())?;
    map_binary(a, b, da, |u, v| {
        if u > v {
            g
        } else if u < v {
            -g
        } else {
            T::zero()
        }
    });
    Ok(())
}

/// Mean absolute error `mean |a − b|`.
pub fn l1_mean_forward<T: Real>(a: &[T], b: &[T]) -> Result<T, KernelError> {
    let kernel = "l1_mean_forward";
    non_empty(kernel, "a", a.len())?;
    Ok(T::c(l1_sum_f64(kernel, a, b)? / a.len() as f64))
}

/// Backward of [`l1_mean_forward`] with respect to `a` (overwrites `da`; `db = −da`).
pub fn l1_mean_backward<T: Real>(
    a: &[T],
    b: &[T],
    dloss: T,
    da: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "l1_mean_backward";
    non_empty(kernel, "a", a.len())?;
    l1_grad(kernel, a, b, T::c(dloss.f64() / a.len() as f64), da)
}

/// Summed absolute error `Σ |a − b|`.
pub fn l1_sum_forward<T: Real>(a: &[T], b: &[T]) -> Result<T, KernelError> {
    Ok(T::c(l1_sum_f64("l1_sum_forward", a, b)?))
}

/// Backward of [`l1_sum_forward`] with respect to `a` (overwrites `da`; `db = −da`).
pub fn l1_sum_backward<T: Real>(
    a: &[T],
    b: &[T],
    dloss: T,
    da: &mut [T],
) -> Result<(), KernelError> {
    l1_grad("l1_sum_backward", a, b, dloss, da)
}
