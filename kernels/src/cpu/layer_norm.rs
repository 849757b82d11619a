//! LayerNorm over the last dimension of a `[rows, dim]` tensor, forward and backward.
//!
//! Rows are independent and short (a token's channels), so each task takes a block of rows;
//! row statistics are two-pass in f64 (the row is in cache for the second pass). Parameter
//! gradients are per-block partials in f64, added in block order.

use super::group_norm::{add_into, Affine, AffineGrads, NormStats, NormStatsMut};
use super::reduce::{sum_mapped2_f64, sum_mapped_f64};
use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// Geometry of a LayerNorm call: `rows` vectors of `dim` features, normalised one by one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNormDims {
    pub rows: usize,
    pub dim: usize,
    pub eps: f64,
}

impl LayerNormDims {
    /// Elements of the activation.
    pub fn len(&self) -> usize {
        self.rows * self.dim
    }

    /// Whether the activation has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn validate(&self, kernel: &'static str) -> Result<(), KernelError> {
        if self.dim == 0 {
            return Err(KernelError::Geometry {
                kernel,
                msg: "dim must be > 0".into(),
            });
        }
        if self.eps.is_nan() || self.eps < 0.0 {
            return Err(KernelError::Geometry {
                kernel,
                msg: format!("eps must be >= 0, got {}", self.eps),
            });
        }
        Ok(())
    }

    /// Rows per rayon task: about 16k elements each.
    fn rows_per_task(&self) -> usize {
        (16 * 1024 / self.dim.max(1)).max(1)
    }
}

/// LayerNorm forward: `y = (x − μ)·rstd·γ + β` per row; saves `mean`, `rstd` per row.
pub fn layer_norm_forward<T: Real>(
    d: &LayerNormDims,
    x: &[T],
    affine: Affine<T>,
    y: &mut [T],
    stats: NormStatsMut<T>,
) -> Result<(), KernelError> {
    let kernel = "layer_norm_forward";
    d.validate(kernel)?;
    check_len(kernel, "x", x.len(), d.len())?;
    check_len(kernel, "y", y.len(), d.len())?;
    check_len(kernel, "gamma", affine.gamma.len(), d.dim)?;
    check_len(kernel, "beta", affine.beta.len(), d.dim)?;
    check_len(kernel, "mean", stats.mean.len(), d.rows)?;
    check_len(kernel, "rstd", stats.rstd.len(), d.rows)?;
    let (dim, eps) = (d.dim, d.eps);
    y.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .zip(stats.mean.par_iter_mut().zip(stats.rstd.par_iter_mut()))
        .with_min_len(d.rows_per_task())
        .for_each(|((yr, xr), (m, r))| {
            let mean = sum_mapped_f64(xr, |v| v.f64()) / dim as f64;
            let var = sum_mapped_f64(xr, |v| {
                let c = v.f64() - mean;
                c * c
            }) / dim as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            *m = T::c(mean);
            *r = T::c(rstd);
            let (mt, rt) = (T::c(mean), T::c(rstd));
            for (((o, &v), &g), &b) in yr.iter_mut().zip(xr).zip(affine.gamma).zip(affine.beta) {
                *o = (v - mt) * rt * g + b;
            }
        });
    Ok(())
}

/// LayerNorm backward: overwrites `dx`, accumulates `dgamma`, `dbeta`.
pub fn layer_norm_backward<T: Real>(
    d: &LayerNormDims,
    x: &[T],
    gamma: &[T],
    stats: NormStats<T>,
    dy: &[T],
    dx: &mut [T],
    grads: AffineGrads<T>,
) -> Result<(), KernelError> {
    let kernel = "layer_norm_backward";
    d.validate(kernel)?;
    check_len(kernel, "x", x.len(), d.len())?;
    check_len(kernel, "dy", dy.len(), d.len())?;
    check_len(kernel, "dx", dx.len(), d.len())?;
    check_len(kernel, "gamma", gamma.len(), d.dim)?;
    check_len(kernel, "mean", stats.mean.len(), d.rows)?;
    check_len(kernel, "rstd", stats.rstd.len(), d.rows)?;
    check_len(kernel, "dgamma", grads.dgamma.len(), d.dim)?;
    check_len(kernel, "dbeta", grads.dbeta.len(), d.dim)?;
    let dim = d.dim;
    let block = d.rows_per_task() * dim;
    let block_rows = d.rows_per_task();
    let parts: Vec<Vec<f64>> = dx
        .par_chunks_mut(block)
        .zip(x.par_chunks(block).zip(dy.par_chunks(block)))
        .enumerate()
        .map(|(bi, (db, (xb, gb)))| {
            // [Σ dy·x̂; dim] ++ [Σ dy; dim] over this block's rows.
            let mut acc = vec![0.0f64; 2 * dim];
            let mut xhat = vec![T::zero(); dim];
            let rows = db
                .chunks_exact_mut(dim)
                .zip(xb.chunks_exact(dim))
                .zip(gb.chunks_exact(dim));
            for (ri, ((dr, xr), gr)) in rows.enumerate() {
                let row = bi * block_rows + ri;
                let (mean, rstd) = (stats.mean[row], stats.rstd[row]);
                for (h, &v) in xhat.iter_mut().zip(xr) {
                    *h = (v - mean) * rstd;
                }
                let (dgs, dbs) = acc.split_at_mut(dim);
                for (((dg, db_), &h), &g) in dgs.iter_mut().zip(dbs.iter_mut()).zip(&xhat).zip(gr) {
                    *dg += g.f64() * h.f64();
                    *db_ += g.f64();
                }
                // dxhat = dy·γ; dx = rstd·(dxhat − mean(dxhat) − x̂·mean(dxhat·x̂)).
                let a = sum_mapped2_f64(gr, gamma, |g, w| g.f64() * w.f64()) / dim as f64;
                let b = gr
                    .iter()
                    .zip(gamma)
                    .zip(&xhat)
                    .map(|((&g, &w), &h)| g.f64() * w.f64() * h.f64())
                    .sum::<f64>()
                    / dim as f64;
                let (at, bt) = (T::c(a), T::c(b));
                for (((o, &g), &w), &h) in dr.iter_mut().zip(gr).zip(gamma).zip(&xhat) {
                    *o = rstd * (g * w - at - h * bt);
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; 2 * dim];
    for p in &parts {
        add_into(&mut total, p);
    }
    for i in 0..dim {
        grads.dgamma[i] += T::c(total[i]);
        grads.dbeta[i] += T::c(total[dim + i]);
    }
    Ok(())
}
