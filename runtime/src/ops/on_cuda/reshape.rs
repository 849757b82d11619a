//! Ops on CUDA that move or combine whole channels and pixels: nearest upsampling, bicubic
//! resize (the separable passes, weight tables uploaded per call), 2×2 max pooling, channel
//! split/concat (strided copies), and the reparameterised Gaussian sample.

use super::{device_of, new_output, on};
use crate::cuda::ops::sample::GpuResizePlan;
use crate::cuda::ops::{loss as lk, sample as sk};
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::pool::MaxPoolDims;
use medvae_kernels::cpu::resize::ResizePlan;
use medvae_kernels::cpu::upsample::UpsampleDims;

pub(crate) fn upsample_forward(
    op: &str,
    d: &UpsampleDims,
    x: &Tensor,
    y_shape: &[usize],
) -> Result<Tensor> {
    let xb = x.cuda(op)?.1;
    new_output(op, x, y_shape, |dev, y| {
        sk::upsample_nearest_forward(dev, d, xb, y)
    })
}

pub(crate) fn upsample_backward(
    op: &str,
    d: &UpsampleDims,
    x_shape: &[usize],
    dy: &Tensor,
) -> Result<Tensor> {
    let dyb = dy.cuda(op)?.1;
    new_output(op, dy, x_shape, |dev, dx| {
        sk::upsample_nearest_backward(dev, d, dyb, dx, 0.0)
    })
}

/// Bicubic antialiased resize of `x` `[n, h, w, c]` by `plan` into a new tensor of `y_shape`.
pub(crate) fn resize_forward(
    op: &str,
    plan: &ResizePlan,
    (n, c): (usize, usize),
    x: &Tensor,
    y_shape: &[usize],
) -> Result<Tensor> {
    let xb = x.cuda(op)?.1;
    new_output(op, x, y_shape, |dev, y| {
        sk::resize_forward(dev, &GpuResizePlan::new(dev, plan)?, n, c, xb, y)
    })
}

/// The transposed map of [`resize_forward`]: dy to a new tensor of `x_shape`.
pub(crate) fn resize_backward(
    op: &str,
    plan: &ResizePlan,
    (n, c): (usize, usize),
    dy: &Tensor,
    x_shape: &[usize],
) -> Result<Tensor> {
    let dyb = dy.cuda(op)?.1;
    new_output(op, dy, x_shape, |dev, dx| {
        sk::resize_backward(dev, &GpuResizePlan::new(dev, plan)?, n, c, dyb, dx)
    })
}

/// 2×2/2 max pool of `x` into a new tensor of `y_shape`.
pub(crate) fn max_pool_forward(
    op: &str,
    d: &MaxPoolDims,
    x: &Tensor,
    y_shape: &[usize],
) -> Result<Tensor> {
    let xb = x.cuda(op)?.1;
    new_output(op, x, y_shape, |dev, y| {
        sk::max_pool2x2_forward(dev, d, xb, y)
    })
}

/// Its backward from the forward input `x` (the kernel recomputes each window's argmax).
pub(crate) fn max_pool_backward(
    op: &str,
    d: &MaxPoolDims,
    x: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let (xb, dyb) = (x.cuda(op)?.1, dy.cuda(op)?.1);
    new_output(op, dy, x.shape(), |dev, dx| {
        sk::max_pool2x2_backward(dev, d, xb, dyb, dx, 0.0)
    })
}

/// Copy channels `[c_from, c_from + width)` of every row of `src` (row length `c_src`) into
/// channels `[c_to, c_to + width)` of `dst` (row length `c_dst`).
#[allow(clippy::too_many_arguments)]
fn copy_channels(
    op: &str,
    src: &Tensor,
    c_src: usize,
    c_from: usize,
    dst: &Tensor,
    c_dst: usize,
    c_to: usize,
    width: usize,
) -> Result<()> {
    let (dev, s) = src.cuda(op)?;
    let d = dst.cuda(op)?.1;
    let rows = src.numel() / c_src.max(1);
    on(
        op,
        dev.copy_2d(
            s,
            4 * c_from,
            4 * c_src,
            d,
            4 * c_to,
            4 * c_dst,
            4 * width,
            rows,
        ),
    )
}

pub(crate) fn split_last(op: &str, x: &Tensor, c0: usize) -> Result<(Tensor, Tensor)> {
    let dev = device_of(op, x)?;
    let c = x.shape().last().copied().unwrap_or(0);
    let mut s0 = x.shape().to_vec();
    let mut s1 = s0.clone();
    if let (Some(a), Some(b)) = (s0.last_mut(), s1.last_mut()) {
        *a = c0;
        *b = c - c0;
    }
    let a = Tensor::cuda_uninit(&dev, &s0)?;
    let b = Tensor::cuda_uninit(&dev, &s1)?;
    copy_channels(op, x, c, 0, &a, c0, 0, c0)?;
    copy_channels(op, x, c, c0, &b, c - c0, 0, c - c0)?;
    Ok((a, b))
}

pub(crate) fn concat_last(op: &str, a: &Tensor, b: &Tensor, y_shape: &[usize]) -> Result<Tensor> {
    let dev = device_of(op, a)?;
    let ca = a.shape().last().copied().unwrap_or(0);
    let cb = b.shape().last().copied().unwrap_or(0);
    let y = Tensor::cuda_uninit(&dev, y_shape)?;
    copy_channels(op, a, ca, 0, &y, ca + cb, 0, ca)?;
    copy_channels(op, b, cb, 0, &y, ca + cb, ca, cb)?;
    Ok(y)
}

pub(crate) fn gaussian_sample_forward(
    op: &str,
    moments: &Tensor,
    eps: &Tensor,
    cz: usize,
) -> Result<Tensor> {
    let pixels = eps.numel() / cz.max(1);
    let (mb, eb) = (moments.cuda(op)?.1, eps.cuda(op)?.1);
    new_output(op, moments, eps.shape(), |dev, z| {
        lk::gaussian_sample_forward(dev, pixels, cz, mb, eb, z)
    })
}

/// `(dmoments, deps)`. `deps = std·dz` is computed exactly as a sample of zero-mean moments
/// with `dz` as the noise (the log-variance half copied over).
pub(crate) fn gaussian_sample_backward(
    op: &str,
    moments: &Tensor,
    eps: &Tensor,
    dz: &Tensor,
    cz: usize,
) -> Result<(Tensor, Tensor)> {
    let dev = device_of(op, moments)?;
    let pixels = eps.numel() / cz.max(1);
    let dm = Tensor::cuda_uninit(&dev, moments.shape())?;
    on(
        op,
        lk::gaussian_sample_backward(
            &dev,
            pixels,
            cz,
            moments.cuda(op)?.1,
            eps.cuda(op)?.1,
            dz.cuda(op)?.1,
            dm.cuda(op)?.1,
            0.0,
        ),
    )?;
    let zero_mean = Tensor::cuda_zeros(&dev, moments.shape())?;
    copy_channels(op, moments, 2 * cz, cz, &zero_mean, 2 * cz, cz, cz)?;
    let de = gaussian_sample_forward(op, &zero_mean, dz, cz)?;
    Ok((dm, de))
}
