//! BatchNorm over channels-last `[N, S, C]` (per channel, statistics over N·S), forward and
//! backward in training mode (batch statistics) and eval mode (running statistics).
//!
//! Training-mode BatchNorm is GroupNorm on a single "sample" of N·S rows with one channel per
//! group, so it reuses the GroupNorm passes; only the running-statistics update is its own.
//! As in PyTorch, normalisation uses the biased batch variance and the running variance is
//! updated with the unbiased one: `running = (1 − momentum)·running + momentum·batch`.

use super::group_norm::{
    add_into, apply_affine, backward_impl, group_mean_var, normalize, rows_per_block, Affine,
    AffineGrads, GroupNormDims, NormStats, NormStatsMut,
};
use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// Geometry and hyper-parameters of a BatchNorm call on `[n, spatial, channels]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormDims {
    pub n: usize,
    /// D·H·W.
    pub spatial: usize,
    pub channels: usize,
    pub eps: f64,
    /// Weight of the batch statistics in the running-statistics update (PyTorch default 0.1).
    pub momentum: f64,
}

impl BatchNormDims {
    /// Elements of the activation.
    pub fn len(&self) -> usize {
        self.n * self.spatial * self.channels
    }

    /// Whether the activation has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of C channels that share statistics: N·S.
    fn rows(&self) -> usize {
        self.n * self.spatial
    }

    /// The equivalent GroupNorm: one sample of N·S rows, one channel per group.
    fn as_group_norm(&self) -> GroupNormDims {
        GroupNormDims {
            n: 1,
            spatial: self.rows(),
            channels: self.channels,
            groups: self.channels,
            eps: self.eps,
        }
    }

    fn validate(&self, kernel: &'static str, training: bool) -> Result<(), KernelError> {
        let bad = |msg: String| Err(KernelError::Geometry { kernel, msg });
        if self.channels == 0 {
            return bad("zero channels".into());
        }
        // The unbiased variance of the running update needs two values, as in PyTorch.
        if training && self.rows() < 2 {
            return bad(format!(
                "training needs more than one value per channel, got {} (n·spatial)",
                self.rows()
            ));
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return bad(format!("eps must be >= 0, got {}", self.eps));
        }
        Ok(())
    }
}

/// Running statistics of a BatchNorm layer (buffers `running_mean`, `running_var`).
#[derive(Clone, Copy, Debug)]
pub struct RunningStats<'a, T> {
    pub mean: &'a [T],
    pub var: &'a [T],
}

/// Running statistics to update in place during a training-mode forward.
#[derive(Debug)]
pub struct RunningStatsMut<'a, T> {
    pub mean: &'a mut [T],
    pub var: &'a mut [T],
}

fn check_common<T>(
    kernel: &'static str,
    d: &BatchNormDims,
    x: &[T],
    out: &[T],
    gamma: &[T],
    stat_lens: [usize; 2],
) -> Result<(), KernelError> {
    check_len(kernel, "x", x.len(), d.len())?;
    check_len(kernel, "output", out.len(), d.len())?;
    check_len(kernel, "gamma", gamma.len(), d.channels)?;
    check_len(kernel, "mean", stat_lens[0], d.channels)?;
    check_len(kernel, "var/rstd", stat_lens[1], d.channels)
}

/// Training-mode forward: normalise with the batch statistics, save `mean` and `rstd` per
/// channel for the backward, and update the running statistics in place.
pub fn batch_norm_train_forward<T: Real>(
    d: &BatchNormDims,
    x: &[T],
    affine: Affine<T>,
    running: RunningStatsMut<T>,
    y: &mut [T],
    saved: NormStatsMut<T>,
) -> Result<(), KernelError> {
    let kernel = "batch_norm_train_forward";
    d.validate(kernel, true)?;
    check_common(
        kernel,
        d,
        x,
        y,
        affine.gamma,
        [saved.mean.len(), saved.rstd.len()],
    )?;
    check_len(kernel, "beta", affine.beta.len(), d.channels)?;
    check_len(kernel, "running_mean", running.mean.len(), d.channels)?;
    check_len(kernel, "running_var", running.var.len(), d.channels)?;
    let gn = d.as_group_norm();
    let mean_var = group_mean_var(&gn, x);
    let unbias = d.rows() as f64 / (d.rows() - 1) as f64;
    for (ch, &(mean, var)) in mean_var.iter().enumerate() {
        let rm = running.mean[ch].f64();
        let rv = running.var[ch].f64();
        running.mean[ch] = T::c((1.0 - d.momentum) * rm + d.momentum * mean);
        running.var[ch] = T::c((1.0 - d.momentum) * rv + d.momentum * var * unbias);
    }
    normalize::<T, false>(&gn, x, affine, &mean_var, y, saved);
    Ok(())
}

/// Training-mode backward from the input and the saved batch statistics: overwrites `dx`,
/// accumulates `dgamma`, `dbeta`. The batch statistics depend on x, which this accounts for.
pub fn batch_norm_train_backward<T: Real>(
    d: &BatchNormDims,
    x: &[T],
    gamma: &[T],
    saved: NormStats<T>,
    dy: &[T],
    dx: &mut [T],
    grads: AffineGrads<T>,
) -> Result<(), KernelError> {
    let kernel = "batch_norm_train_backward";
    d.validate(kernel, true)?;
    check_common(
        kernel,
        d,
        x,
        dx,
        gamma,
        [saved.mean.len(), saved.rstd.len()],
    )?;
    check_len(kernel, "dy", dy.len(), d.len())?;
    check_len(kernel, "dgamma", grads.dgamma.len(), d.channels)?;
    check_len(kernel, "dbeta", grads.dbeta.len(), d.channels)?;
    backward_impl::<T, false>(
        &d.as_group_norm(),
        x,
        gamma,
        &[],
        saved,
        Some(dy),
        dx,
        grads,
    );
    Ok(())
}

/// Per-channel `a = γ/√(running_var + eps)` (and the running mean as f64).
fn eval_scale<T: Real>(d: &BatchNormDims, gamma: &[T], running: &RunningStats<T>) -> Vec<f64> {
    (0..d.channels)
        .map(|ch| gamma[ch].f64() / (running.var[ch].f64() + d.eps).sqrt())
        .collect()
}

/// Eval-mode forward: `y = (x − running_mean)/√(running_var + eps)·γ + β`.
pub fn batch_norm_eval_forward<T: Real>(
    d: &BatchNormDims,
    x: &[T],
    affine: Affine<T>,
    running: RunningStats<T>,
    y: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "batch_norm_eval_forward";
    d.validate(kernel, false)?;
    check_common(
        kernel,
        d,
        x,
        y,
        affine.gamma,
        [running.mean.len(), running.var.len()],
    )?;
    check_len(kernel, "beta", affine.beta.len(), d.channels)?;
    if d.is_empty() {
        return Ok(());
    }
    let scale = eval_scale(d, affine.gamma, &running);
    let a: Vec<T> = scale.iter().map(|&v| T::c(v)).collect();
    let b: Vec<T> = (0..d.channels)
        .map(|ch| T::c(affine.beta[ch].f64() - running.mean[ch].f64() * scale[ch]))
        .collect();
    apply_affine::<T, false>(x, y, &[(a, b)], d.rows(), d.channels);
    Ok(())
}

/// Eval-mode backward (statistics are constants): `dx = dy·γ/√(running_var + eps)`
/// (overwritten); `dgamma += Σ dy·x̂`, `dbeta += Σ dy` with x̂ from the running statistics.
pub fn batch_norm_eval_backward<T: Real>(
    d: &BatchNormDims,
    x: &[T],
    gamma: &[T],
    running: RunningStats<T>,
    dy: &[T],
    dx: &mut [T],
    grads: AffineGrads<T>,
) -> Result<(), KernelError> {
    let kernel = "batch_norm_eval_backward";
    d.validate(kernel, false)?;
    check_common(
        kernel,
        d,
        x,
        dx,
        gamma,
        [running.mean.len(), running.var.len()],
    )?;
    check_len(kernel, "dy", dy.len(), d.len())?;
    check_len(kernel, "dgamma", grads.dgamma.len(), d.channels)?;
    check_len(kernel, "dbeta", grads.dbeta.len(), d.channels)?;
    if d.is_empty() {
        return Ok(());
    }
    let c = d.channels;
    let scale = eval_scale(d, gamma, &running);
    let mu: Vec<f64> = running.mean.iter().map(|v| v.f64()).collect();
    let block = rows_per_block(1, d.rows(), c) * c;
    // Per-channel Σ dy and Σ dy·(x − μ), partials in block order.
    let parts: Vec<Vec<f64>> = x
        .par_chunks(block)
        .zip(dy.par_chunks(block))
        .map(|(xb, gb)| {
            let mut acc = vec![0.0f64; 2 * c];
            let (sdy, sdyx) = acc.split_at_mut(c);
            for (xr, gr) in xb.chunks_exact(c).zip(gb.chunks_exact(c)) {
                for ch in 0..c {
                    let g = gr[ch].f64();
                    sdy[ch] += g;
                    sdyx[ch] += g * (xr[ch].f64() - mu[ch]);
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; 2 * c];
    for p in &parts {
        add_into(&mut total, p);
    }
    for ch in 0..c {
        let rstd = 1.0 / (running.var[ch].f64() + d.eps).sqrt();
        grads.dbeta[ch] += T::c(total[ch]);
        grads.dgamma[ch] += T::c(total[c + ch] * rstd);
    }
    let a: Vec<T> = scale.iter().map(|&v| T::c(v)).collect();
    dx.par_chunks_mut(block)
        .zip(dy.par_chunks(block))
        .for_each(|(db, gb)| {
            for (dr, gr) in db.chunks_exact_mut(c).zip(gb.chunks_exact(c)) {
                for ((o, &g), &ac) in dr.iter_mut().zip(gr).zip(&a) {
                    *o = g * ac;
                }
            }
        });
    Ok(())
}
