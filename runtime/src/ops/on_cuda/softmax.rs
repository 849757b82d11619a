//! Row softmax over the last axis on CUDA.

use super::{device_of, on};
use crate::cuda::ops::sample as sk;
use crate::error::Result;
use crate::tensor::Tensor;

/// Row softmax over the last axis.
pub(crate) fn softmax_forward(op: &str, x: &Tensor, rows: usize, n: usize) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let y = Tensor::cuda_uninit(&dev, x.shape())?;
    on(
        op,
        sk::softmax_forward(&dev, x.cuda(op)?.1, y.cuda(op)?.1, rows, n),
    )?;
    Ok(y)
}

pub(crate) fn softmax_backward(
    op: &str,
    y: &Tensor,
    dy: &Tensor,
    rows: usize,
    n: usize,
) -> Result<Tensor> {
    let dev = device_of(op, y)?;
    let dx = Tensor::cuda_uninit(&dev, y.shape())?;
    let (yb, dyb, dxb) = (y.cuda(op)?.1, dy.cuda(op)?.1, dx.cuda(op)?.1);
    on(op, sk::softmax_backward(&dev, yb, dyb, dxb, rows, n, 0.0))?;
    Ok(dx)
}
