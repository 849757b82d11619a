//! Normalisations: GroupNorm (optionally fused with SiLU), LayerNorm, BatchNorm.

use super::{common_device, cpu_only, split_nsc};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::batch_norm::{self as bn, BatchNormDims, RunningStats, RunningStatsMut};
use medvae_kernels::cpu::group_norm::{
    self as gn, Affine, AffineGrads, GroupNormDims, NormStats, NormStatsMut,
};
use medvae_kernels::cpu::layer_norm::{self as ln, LayerNormDims};
use medvae_kernels::volume;
use std::borrow::Cow;

/// What a normalisation forward keeps for its backward: mean and 1/√(var+eps) per group.
/// (BatchNorm in eval mode keeps the running mean and the running *variance* in `rstd`'s
/// place, which is what its backward takes.)
#[derive(Debug, Clone, Default)]
pub struct NormSaved {
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
    /// `(mean, rstd)` of a CUDA forward, kept on the device (the host vectors are then empty).
    pub device_stats: Option<(Tensor, Tensor)>,
}

/// The per-channel affine parameters of a normalisation layer.
pub struct NormParams<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
}

impl NormParams<'_> {
    fn check(&self, op: &str, c: usize) -> Result<()> {
        self.gamma.expect_shape(op, "weight", &[c])?;
        self.beta.expect_shape(op, "bias", &[c])
    }
    fn affine(&self, op: &str) -> Result<Affine<'_, f32>> {
        Ok(Affine {
            gamma: self.gamma.f32s(op)?,
            beta: self.beta.f32s(op)?,
        })
    }
}

/// Gradients of the affine parameters; `None` for a frozen layer.
pub struct NormGrads<'a> {
    pub dgamma: &'a mut Tensor,
    pub dbeta: &'a mut Tensor,
}

fn gn_dims(op: &str, x: &Tensor, groups: usize, eps: f64) -> Result<GroupNormDims> {
    let (n, s, c) = split_nsc(op, x.shape())?;
    if groups == 0 || c % groups != 0 {
        return Err(RuntimeError::shape(
            op,
            format!("{c} channels do not split into {groups} groups"),
        ));
    }
    Ok(GroupNormDims {
        n,
        spatial: volume(s),
        channels: c,
        groups,
        eps,
    })
}

/// GroupNorm on a channels-last activation; with `fuse_silu` the output is `silu(gn(x))`.
pub fn group_norm_forward(
    x: &Tensor,
    p: &NormParams,
    groups: usize,
    eps: f64,
    fuse_silu: bool,
) -> Result<(Tensor, NormSaved)> {
    const OP: &str = "group_norm_forward";
    let dev = common_device(OP, &[x, p.gamma, p.beta])?;
    let d = gn_dims(OP, x, groups, eps)?;
    p.check(OP, d.channels)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::norm::group_norm_forward(OP, &d, x, p, fuse_silu);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(x.shape());
    let mut saved = NormSaved {
        mean: vec![0.0; d.stats_len()],
        rstd: vec![0.0; d.stats_len()],
        device_stats: None,
    };
    let stats = NormStatsMut {
        mean: &mut saved.mean,
        rstd: &mut saved.rstd,
    };
    let f = if fuse_silu {
        gn::group_norm_silu_forward
    } else {
        gn::group_norm_forward
    };
    f(&d, x.f32s(OP)?, p.affine(OP)?, y.f32s_mut(OP)?, stats)?;
    Ok((y, saved))
}

/// Backward of [`group_norm_forward`]: returns `dx`, accumulates parameter grads if given.
/// An owned `dy` ([`Cow::Owned`]) is overwritten with `dx` and returned, so the backward
/// needs no second activation-sized buffer.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    x: &Tensor,
    p: &NormParams,
    groups: usize,
    eps: f64,
    fuse_silu: bool,
    saved: &NormSaved,
    dy: Cow<'_, Tensor>,
    grads: Option<NormGrads>,
) -> Result<Tensor> {
    const OP: &str = "group_norm_backward";
    let dev = common_device(OP, &[x, &dy, p.gamma, p.beta])?;
    let d = gn_dims(OP, x, groups, eps)?;
    p.check(OP, d.channels)?;
    dy.expect_shape(OP, "dy", x.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::norm::group_norm_backward(
            OP, &d, x, p, fuse_silu, saved, dy, grads,
        );
    }
    let _timer = cpu_only(OP, dev)?;
    let (mut sg, mut sb) = (Vec::new(), Vec::new());
    let grads = param_grads(OP, grads, d.channels, &mut sg, &mut sb)?;
    let stats = NormStats {
        mean: &saved.mean,
        rstd: &saved.rstd,
    };
    let xs = x.f32s(OP)?;
    match dy {
        Cow::Owned(mut grad) => {
            let g = grad.f32s_mut(OP)?;
            if fuse_silu {
                gn::group_norm_silu_backward_in_place(&d, xs, p.affine(OP)?, stats, g, grads)?;
            } else {
                let gamma = p.gamma.f32s(OP)?;
                gn::group_norm_backward_in_place(&d, xs, gamma, stats, g, grads)?;
            }
            Ok(grad)
        }
        Cow::Borrowed(dy) => {
            let mut dx = Tensor::uninit(x.shape());
            let (dys, dxs) = (dy.f32s(OP)?, dx.f32s_mut(OP)?);
            if fuse_silu {
                gn::group_norm_silu_backward(&d, xs, p.affine(OP)?, stats, dys, dxs, grads)?;
            } else {
                let gamma = p.gamma.f32s(OP)?;
                gn::group_norm_backward(&d, xs, gamma, stats, dys, dxs, grads)?;
            }
            Ok(dx)
        }
    }
}

/// Parameter-gradient slices: the caller's tensors, or scratch for a frozen layer.
fn param_grads<'a>(
    op: &str,
    grads: Option<NormGrads<'a>>,
    c: usize,
    scratch_g: &'a mut Vec<f32>,
    scratch_b: &'a mut Vec<f32>,
) -> Result<AffineGrads<'a, f32>> {
    match grads {
        Some(g) => {
            g.dgamma.expect_shape(op, "dweight", &[c])?;
            g.dbeta.expect_shape(op, "dbias", &[c])?;
            Ok(AffineGrads {
                dgamma: g.dgamma.f32s_mut(op)?,
                dbeta: g.dbeta.f32s_mut(op)?,
            })
        }
        None => {
            *scratch_g = vec![0.0; c];
            *scratch_b = vec![0.0; c];
            Ok(AffineGrads {
                dgamma: scratch_g,
                dbeta: scratch_b,
            })
        }
    }
}

fn ln_dims(op: &str, x: &Tensor, eps: f64) -> Result<LayerNormDims> {
    let dim = *x
        .shape()
        .last()
        .ok_or_else(|| RuntimeError::shape(op, "layer norm of a scalar"))?;
    Ok(LayerNormDims {
        rows: x.numel() / dim.max(1),
        dim,
        eps,
    })
}

/// LayerNorm over the last dimension.
pub fn layer_norm_forward(x: &Tensor, p: &NormParams, eps: f64) -> Result<(Tensor, NormSaved)> {
    const OP: &str = "layer_norm_forward";
    let dev = common_device(OP, &[x, p.gamma, p.beta])?;
    let d = ln_dims(OP, x, eps)?;
    p.check(OP, d.dim)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::norm::layer_norm_forward(OP, &d, x, p);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(x.shape());
    let mut saved = NormSaved {
        mean: vec![0.0; d.rows],
        rstd: vec![0.0; d.rows],
        device_stats: None,
    };
    let stats = NormStatsMut {
        mean: &mut saved.mean,
        rstd: &mut saved.rstd,
    };
    ln::layer_norm_forward(&d, x.f32s(OP)?, p.affine(OP)?, y.f32s_mut(OP)?, stats)?;
    Ok((y, saved))
}

pub fn layer_norm_backward(
    x: &Tensor,
    p: &NormParams,
    eps: f64,
    saved: &NormSaved,
    dy: &Tensor,
    grads: Option<NormGrads>,
) -> Result<Tensor> {
    const OP: &str = "layer_norm_backward";
    let dev = common_device(OP, &[x, dy, p.gamma])?;
    let d = ln_dims(OP, x, eps)?;
    p.check(OP, d.dim)?;
    dy.expect_shape(OP, "dy", x.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::norm::layer_norm_backward(OP, &d, x, p, saved, dy, grads);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dx = Tensor::uninit(x.shape());
    let (mut sg, mut sb) = (Vec::new(), Vec::new());
    let grads = param_grads(OP, grads, d.dim, &mut sg, &mut sb)?;
    let stats = NormStats {
        mean: &saved.mean,
        rstd: &saved.rstd,
    };
    ln::layer_norm_backward(
        &d,
        x.f32s(OP)?,
        p.gamma.f32s(OP)?,
        stats,
        dy.f32s(OP)?,
        dx.f32s_mut(OP)?,
        grads,
    )?;
    Ok(dx)
}

/// BatchNorm running statistics (buffers, updated in training mode).
pub struct Running<'a> {
    pub mean: &'a mut Tensor,
    pub var: &'a mut Tensor,
}

fn bn_dims(op: &str, x: &Tensor, eps: f64, momentum: f64) -> Result<BatchNormDims> {
    let (n, s, c) = split_nsc(op, x.shape())?;
    Ok(BatchNormDims {
        n,
        spatial: volume(s),
        channels: c,
        eps,
        momentum,
    })
}

/// BatchNorm forward. Training mode normalises with batch statistics and updates the running
/// ones (unbiased variance, as PyTorch); eval mode uses the running statistics.
pub fn batch_norm_forward(
    x: &Tensor,
    p: &NormParams,
    running: Running,
    training: bool,
    eps: f64,
    momentum: f64,
) -> Result<(Tensor, NormSaved)> {
    const OP: &str = "batch_norm_forward";
    let dev = common_device(OP, &[x, p.gamma, p.beta, running.mean, running.var])?;
    let d = bn_dims(OP, x, eps, momentum)?;
    p.check(OP, d.channels)?;
    running
        .mean
        .expect_shape(OP, "running_mean", &[d.channels])?;
    running.var.expect_shape(OP, "running_var", &[d.channels])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::norm::batch_norm_forward(OP, &d, x, p, running, training);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(x.shape());
    let mut saved = NormSaved {
        mean: vec![0.0; d.channels],
        rstd: vec![0.0; d.channels],
        device_stats: None,
    };
    if training {
        let run = RunningStatsMut {
            mean: running.mean.f32s_mut(OP)?,
            var: running.var.f32s_mut(OP)?,
        };
        let stats = NormStatsMut {
            mean: &mut saved.mean,
            rstd: &mut saved.rstd,
        };
        bn::batch_norm_train_forward(&d, x.f32s(OP)?, p.affine(OP)?, run, y.f32s_mut(OP)?, stats)?;
    } else {
        let run = RunningStats {
            mean: running.mean.f32s(OP)?,
            var: running.var.f32s(OP)?,
        };
        bn::batch_norm_eval_forward(&d, x.f32s(OP)?, p.affine(OP)?, run, y.f32s_mut(OP)?)?;
        // Eval backward needs the running statistics as they were: keep a copy.
        saved.mean = running.mean.to_f32_vec();
        saved.rstd = running.var.to_f32_vec();
    }
    Ok((y, saved))
}

/// Backward of [`batch_norm_forward`] (the same `training` flag).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: &Tensor,
    p: &NormParams,
    training: bool,
    eps: f64,
    saved: &NormSaved,
    dy: &Tensor,
    grads: Option<NormGrads>,
) -> Result<Tensor> {
    const OP: &str = "batch_norm_backward";
    let dev = common_device(OP, &[x, dy, p.gamma])?;
    let d = bn_dims(OP, x, eps, 0.0)?;
    p.check(OP, d.channels)?;
    dy.expect_shape(OP, "dy", x.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::norm::batch_norm_backward(OP, &d, x, p, training, saved, dy, grads);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dx = Tensor::uninit(x.shape());
    let (mut sg, mut sb) = (Vec::new(), Vec::new());
    let grads = param_grads(OP, grads, d.channels, &mut sg, &mut sb)?;
    if training {
        let stats = NormStats {
            mean: &saved.mean,
            rstd: &saved.rstd,
        };
        bn::batch_norm_train_backward(
            &d,
            x.f32s(OP)?,
            p.gamma.f32s(OP)?,
            stats,
            dy.f32s(OP)?,
            dx.f32s_mut(OP)?,
            grads,
        )?;
    } else {
        let run = RunningStats {
            mean: &saved.mean,
            var: &saved.rstd,
        };
        bn::batch_norm_eval_backward(
            &d,
            x.f32s(OP)?,
            p.gamma.f32s(OP)?,
            run,
            dy.f32s(OP)?,
            dx.f32s_mut(OP)?,
            grads,
        )?;
    }
    Ok(dx)
}
