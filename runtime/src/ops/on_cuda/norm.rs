//! GroupNorm (+SiLU) and LayerNorm on CUDA. The saved statistics stay on the device, in
//! `NormSaved::device_stats`.

use super::{device_of, on};
use crate::cuda::ops::norm as k;
use crate::cuda::DeviceBuffer;
use crate::error::{Result, RuntimeError};
use crate::ops::norm::{NormGrads, NormParams, NormSaved, Running};
use crate::tensor::Tensor;
use medvae_kernels::cpu::batch_norm::BatchNormDims;
use medvae_kernels::cpu::group_norm::GroupNormDims;
use medvae_kernels::cpu::layer_norm::LayerNormDims;
use std::borrow::Cow;

fn saved_stats<'a>(op: &str, saved: &'a NormSaved) -> Result<(&'a Tensor, &'a Tensor)> {
    match &saved.device_stats {
        Some((m, r)) => Ok((m, r)),
        None => Err(RuntimeError::Other(format!(
            "{op}: the saved statistics come from a CPU forward, the gradient is on CUDA"
        ))),
    }
}

/// The affine-gradient buffers to accumulate into (shared buffers are copied first).
type GradBuffers<'a> = (Option<&'a DeviceBuffer>, Option<&'a DeviceBuffer>);

fn grad_buffers<'a>(op: &str, grads: Option<NormGrads<'a>>) -> Result<GradBuffers<'a>> {
    Ok(match grads {
        Some(g) => (Some(g.dgamma.cuda_out(op)?), Some(g.dbeta.cuda_out(op)?)),
        None => (None, None),
    })
}

/// What a CUDA forward keeps: its statistics, on the device.
fn device_saved(mean: Tensor, rstd: Tensor) -> NormSaved {
    NormSaved {
        device_stats: Some((mean, rstd)),
        ..NormSaved::default()
    }
}

pub(crate) fn group_norm_forward(
    op: &str,
    d: &GroupNormDims,
    x: &Tensor,
    p: &NormParams,
    fuse_silu: bool,
) -> Result<(Tensor, NormSaved)> {
    let dev = device_of(op, x)?;
    let y = Tensor::cuda_uninit(&dev, x.shape())?;
    let mean = Tensor::cuda_uninit(&dev, &[d.stats_len()])?;
    let rstd = Tensor::cuda_uninit(&dev, &[d.stats_len()])?;
    on(
        op,
        k::group_norm_forward(
            &dev,
            d,
            fuse_silu,
            x.cuda(op)?.1,
            Some(p.gamma.cuda(op)?.1),
            Some(p.beta.cuda(op)?.1),
            y.cuda(op)?.1,
            mean.cuda(op)?.1,
            rstd.cuda(op)?.1,
        ),
    )?;
    let saved = device_saved(mean, rstd);
    Ok((y, saved))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm_backward(
    op: &str,
    d: &GroupNormDims,
    x: &Tensor,
    p: &NormParams,
    fuse_silu: bool,
    saved: &NormSaved,
    dy: Cow<'_, Tensor>,
    grads: Option<NormGrads>,
) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let (mean, rstd) = saved_stats(op, saved)?;
    let (dg, db) = grad_buffers(op, grads)?;
    // In place for an owned dy: its buffer (copied first if a clone shares it) becomes dx.
    let (dy, mut dx) = match dy {
        Cow::Owned(grad) => (None, grad),
        Cow::Borrowed(dy) => (Some(dy), Tensor::cuda_uninit(&dev, x.shape())?),
    };
    let dxb = dx.cuda_out(op)?;
    let dyb = match dy {
        Some(dy) => dy.cuda(op)?.1,
        None => dxb,
    };
    on(
        op,
        k::group_norm_backward(
            &dev,
            d,
            fuse_silu,
            x.cuda(op)?.1,
            Some(p.gamma.cuda(op)?.1),
            Some(p.beta.cuda(op)?.1),
            mean.cuda(op)?.1,
            rstd.cuda(op)?.1,
            dyb,
            dxb,
            dg,
            db,
            0.0,
        ),
    )?;
    Ok(dx)
}

pub(crate) fn layer_norm_forward(
    op: &str,
    d: &LayerNormDims,
    x: &Tensor,
    p: &NormParams,
) -> Result<(Tensor, NormSaved)> {
    let dev = device_of(op, x)?;
    let y = Tensor::cuda_uninit(&dev, x.shape())?;
    let mean = Tensor::cuda_uninit(&dev, &[d.rows])?;
    let rstd = Tensor::cuda_uninit(&dev, &[d.rows])?;
    on(
        op,
        k::layer_norm_forward(
            &dev,
            d,
            x.cuda(op)?.1,
            Some(p.gamma.cuda(op)?.1),
            Some(p.beta.cuda(op)?.1),
            y.cuda(op)?.1,
            mean.cuda(op)?.1,
            rstd.cuda(op)?.1,
        ),
    )?;
    let saved = device_saved(mean, rstd);
    Ok((y, saved))
}

pub(crate) fn layer_norm_backward(
    op: &str,
    d: &LayerNormDims,
    x: &Tensor,
    p: &NormParams,
    saved: &NormSaved,
    dy: &Tensor,
    grads: Option<NormGrads>,
) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let (mean, rstd) = saved_stats(op, saved)?;
    let dx = Tensor::cuda_uninit(&dev, x.shape())?;
    let (dg, db) = grad_buffers(op, grads)?;
    on(
        op,
        k::layer_norm_backward(
            &dev,
            d,
            x.cuda(op)?.1,
            Some(p.gamma.cuda(op)?.1),
            mean.cuda(op)?.1,
            rstd.cuda(op)?.1,
            dy.cuda(op)?.1,
            dx.cuda(op)?.1,
            dg,
            db,
            0.0,
        ),
    )?;
    Ok(dx)
}

/// BatchNorm forward; training mode updates the running statistics in place (on the device).
pub(crate) fn batch_norm_forward(
    op: &str,
    d: &BatchNormDims,
    x: &Tensor,
    p: &NormParams,
    running: Running,
    training: bool,
) -> Result<(Tensor, NormSaved)> {
    let dev = device_of(op, x)?;
    let y = Tensor::cuda_uninit(&dev, x.shape())?;
    let (xb, gb, bb) = (x.cuda(op)?.1, p.gamma.cuda(op)?.1, p.beta.cuda(op)?.1);
    let stats = if training {
        let mean = Tensor::cuda_uninit(&dev, &[d.channels])?;
        let rstd = Tensor::cuda_uninit(&dev, &[d.channels])?;
        let rm = running.mean.cuda_out(op)?;
        let rv = running.var.cuda_out(op)?;
        on(
            op,
            k::batch_norm_train_forward(
                &dev,
                d,
                xb,
                gb,
                bb,
                rm,
                rv,
                y.cuda(op)?.1,
                mean.cuda(op)?.1,
                rstd.cuda(op)?.1,
            ),
        )?;
        (mean, rstd)
    } else {
        let (rm, rv) = (running.mean.cuda(op)?.1, running.var.cuda(op)?.1);
        on(
            op,
            k::batch_norm_eval_forward(&dev, d, xb, gb, bb, rm, rv, y.cuda(op)?.1),
        )?;
        // The eval backward needs the running statistics as they are now: a clone shares the
        // buffer and a later write copies it first.
        (running.mean.clone(), running.var.clone())
    };
    let saved = device_saved(stats.0, stats.1);
    Ok((y, saved))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_backward(
    op: &str,
    d: &BatchNormDims,
    x: &Tensor,
    p: &NormParams,
    training: bool,
    saved: &NormSaved,
    dy: &Tensor,
    grads: Option<NormGrads>,
) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let (s0, s1) = saved_stats(op, saved)?;
    let dx = Tensor::cuda_uninit(&dev, x.shape())?;
    let (dg, db) = grad_buffers(op, grads)?;
    let (xb, gb, dyb, dxb) = (
        x.cuda(op)?.1,
        p.gamma.cuda(op)?.1,
        dy.cuda(op)?.1,
        dx.cuda(op)?.1,
    );
    let (s0, s1) = (s0.cuda(op)?.1, s1.cuda(op)?.1);
    let r = if training {
        k::batch_norm_train_backward(&dev, d, xb, gb, s0, s1, dyb, dxb, dg, db)
    } else {
        k::batch_norm_eval_backward(&dev, d, xb, gb, s0, s1, dyb, dxb, dg, db)
    };
    on(op, r)?;
    Ok(dx)
}
