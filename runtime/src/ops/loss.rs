//! Loss reductions: KL of a diagonal Gaussian, hinge, L1.

use super::{common_device, cpu_only, split_nsc};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::loss::{self as k, KlDims};

fn kl_dims(op: &str, moments: &Tensor, keep_last_axis: bool) -> Result<KlDims> {
    let (n, s, c2) = split_nsc(op, moments.shape())?;
    if c2 % 2 != 0 {
        return Err(RuntimeError::shape(
            op,
            format!("moments {:?} need an even channel count", moments.shape()),
        ));
    }
    Ok(KlDims {
        n,
        spatial: s,
        z_channels: c2 / 2,
        keep_last_axis,
    })
}

/// KL(N(μ, σ²) ‖ N(0, 1)) per sample from channels-last moments `[N, .., 2·Cz]` (mean, then
/// log-variance clamped to [−30, 20]). `keep_last_axis` reproduces the reference's 3D `kl()`,
/// which keeps the W axis (shape `[N, W]`).
pub fn kl_forward(moments: &Tensor, keep_last_axis: bool) -> Result<Tensor> {
    const OP: &str = "kl_forward";
    let dev = common_device(OP, &[moments])?;
    let d = kl_dims(OP, moments, keep_last_axis)?;
    let shape = if keep_last_axis {
        vec![d.n, d.spatial[2]]
    } else {
        vec![d.n]
    };
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::loss::kl_forward(OP, &d, moments, &shape);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut kl = Tensor::uninit(&shape);
    k::kl_diag_gaussian_forward(&d, moments.f32s(OP)?, kl.f32s_mut(OP)?)?;
    Ok(kl)
}

pub fn kl_backward(moments: &Tensor, keep_last_axis: bool, dkl: &Tensor) -> Result<Tensor> {
    const OP: &str = "kl_backward";
    let dev = common_device(OP, &[moments, dkl])?;
    let d = kl_dims(OP, moments, keep_last_axis)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::loss::kl_backward(OP, &d, moments, dkl);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dm = Tensor::uninit(moments.shape());
    k::kl_diag_gaussian_backward(&d, moments.f32s(OP)?, dkl.f32s(OP)?, dm.f32s_mut(OP)?)?;
    Ok(dm)
}

/// Discriminator hinge loss `½(mean relu(1 − real) + mean relu(1 + fake))`.
pub fn hinge_forward(real: &Tensor, fake: &Tensor) -> Result<f32> {
    const OP: &str = "hinge_forward";
    let dev = common_device(OP, &[real, fake])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::loss::hinge_forward(OP, real, fake);
    }
    let _timer = cpu_only(OP, dev)?;
    Ok(k::hinge_d_loss_forward(real.f32s(OP)?, fake.f32s(OP)?)?)
}

/// Gradients of the hinge loss scaled by `dloss`: `(d_real, d_fake)`.
pub fn hinge_backward(real: &Tensor, fake: &Tensor, dloss: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "hinge_backward";
    let dev = common_device(OP, &[real, fake])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::loss::hinge_backward(OP, real, fake, dloss);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dr = Tensor::uninit(real.shape());
    let mut df = Tensor::uninit(fake.shape());
    k::hinge_d_loss_backward(
        real.f32s(OP)?,
        fake.f32s(OP)?,
        dloss,
        dr.f32s_mut(OP)?,
        df.f32s_mut(OP)?,
    )?;
    Ok((dr, df))
}

/// One half of the hinge loss as a sum, `Σ relu(1 + sign·x)` (sign −1 for the real logits, +1
/// for the fake ones): for a discriminator that runs real and fake images as separate passes.
pub fn hinge_half_forward(logits: &Tensor, sign: f32) -> Result<f64> {
    const OP: &str = "hinge_half_forward";
    #[cfg(feature = "cuda")]
    if !logits.device().is_cpu() {
        return super::on_cuda::reduce::hinge_half_forward(OP, logits, sign);
    }
    Ok(k::hinge_half_forward(logits.f32s(OP)?, sign)?)
}

/// Gradient of `g · Σ relu(1 + sign·x)`: `g·sign` where the hinge is open, else 0.
pub fn hinge_half_backward(logits: &Tensor, sign: f32, g: f32) -> Result<Tensor> {
    const OP: &str = "hinge_half_backward";
    #[cfg(feature = "cuda")]
    if !logits.device().is_cpu() {
        return super::on_cuda::reduce::hinge_half_backward(OP, logits, sign, g);
    }
    let mut dx = Tensor::uninit(logits.shape());
    k::hinge_half_backward(logits.f32s(OP)?, sign, g, dx.f32s_mut(OP)?)?;
    Ok(dx)
}

/// `mean |a − b|`.
pub fn l1_mean_forward(a: &Tensor, b: &Tensor) -> Result<f32> {
    const OP: &str = "l1_mean_forward";
    let dev = common_device(OP, &[a, b])?;
    b.expect_shape(OP, "b", a.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::loss::l1_mean_forward(OP, a, b);
    }
    let _timer = cpu_only(OP, dev)?;
    Ok(k::l1_mean_forward(a.f32s(OP)?, b.f32s(OP)?)?)
}

/// Gradient of `dloss · mean |a − b|` with respect to `a`.
pub fn l1_mean_backward(a: &Tensor, b: &Tensor, dloss: f32) -> Result<Tensor> {
    const OP: &str = "l1_mean_backward";
    let dev = common_device(OP, &[a, b])?;
    b.expect_shape(OP, "b", a.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::loss::l1_mean_backward(OP, a, b, dloss);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut da = Tensor::uninit(a.shape());
    k::l1_mean_backward(a.f32s(OP)?, b.f32s(OP)?, dloss, da.f32s_mut(OP)?)?;
    Ok(da)
}
