//! Softmax over the last dimension.

use super::{common_device, cpu_only};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::softmax as k;

fn rows_cols(op: &str, x: &Tensor) -> Result<(usize, usize)> {
    let n = *x
        .shape()
        .last()
        .ok_or_else(|| RuntimeError::shape(op, "softmax of a scalar"))?;
    Ok((x.numel() / n.max(1), n))
}

pub fn softmax_forward(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_forward";
    let dev = common_device(OP, &[x])?;
    let (rows, n) = rows_cols(OP, x)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::softmax::softmax_forward(OP, x, rows, n);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(x.shape());
    k::softmax_forward(x.f32s(OP)?, rows, n, y.f32s_mut(OP)?)?;
    Ok(y)
}

/// `dx` from the forward *output* `y` and `dy`.
pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_backward";
    let dev = common_device(OP, &[y, dy])?;
    dy.expect_shape(OP, "dy", y.shape())?;
    let (rows, n) = rows_cols(OP, y)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::softmax::softmax_backward(OP, y, dy, rows, n);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dx = Tensor::uninit(y.shape());
    k::softmax_backward(y.f32s(OP)?, dy.f32s(OP)?, rows, n, dx.f32s_mut(OP)?)?;
    Ok(dx)
}
