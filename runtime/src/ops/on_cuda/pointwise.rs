//! Pointwise ops on CUDA: activations and elementwise arithmetic.

use super::{device_of, on};
use crate::cuda::ops::elementwise::{self as k, Activation as CudaActivation};
use crate::error::Result;
use crate::ops::activation::Activation;
use crate::tensor::Tensor;

fn kernel_activation(act: Activation) -> CudaActivation {
    match act {
        Activation::Silu => CudaActivation::Silu,
        Activation::Relu => CudaActivation::Relu,
        Activation::LeakyRelu(s) => CudaActivation::LeakyRelu(s),
        Activation::Gelu => CudaActivation::Gelu,
    }
}

pub(crate) fn activation_forward(op: &str, act: Activation, x: &Tensor) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let y = Tensor::cuda_uninit(&dev, x.shape())?;
    let n = x.numel();
    on(
        op,
        k::activation_forward(
            &dev,
            kernel_activation(act),
            x.cuda(op)?.1,
            y.cuda(op)?.1,
            n,
        ),
    )?;
    Ok(y)
}

pub(crate) fn activation_backward(
    op: &str,
    act: Activation,
    x: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let dx = Tensor::cuda_uninit(&dev, x.shape())?;
    let (xb, dyb, dxb) = (x.cuda(op)?.1, dy.cuda(op)?.1, dx.cuda(op)?.1);
    on(
        op,
        k::activation_backward(&dev, kernel_activation(act), xb, dyb, dxb, x.numel()),
    )?;
    Ok(dx)
}

/// ReLU in place (`act_relu_fwd` with its output aliasing its input, which elementwise
/// kernels allow).
pub(crate) fn relu_inplace(op: &str, y: &mut Tensor) -> Result<()> {
    let dev = device_of(op, y)?;
    let n = y.numel();
    let yb = y.cuda_out(op)?;
    on(
        op,
        k::activation_forward(&dev, CudaActivation::Relu, yb, yb, n),
    )
}

/// `g = g·[y > 0]` in place: `act_relu_bwd` with the output `y` as its `x` (same mask) and
/// `dx` aliasing `dy`.
pub(crate) fn relu_mask_inplace(op: &str, g: &mut Tensor, y: &Tensor) -> Result<()> {
    let dev = device_of(op, y)?;
    let n = y.numel();
    let yb = y.cuda(op)?.1;
    let gb = g.cuda_out(op)?;
    on(
        op,
        k::activation_backward(&dev, CudaActivation::Relu, yb, gb, gb, n),
    )
}

/// `alpha·a + beta·b` as a new tensor.
pub(crate) fn add_scaled(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    alpha: f32,
    beta: f32,
) -> Result<Tensor> {
    let dev = device_of(op, a)?;
    let y = Tensor::cuda_uninit(&dev, a.shape())?;
    let (ab, bb, yb) = (a.cuda(op)?.1, b.cuda(op)?.1, y.cuda(op)?.1);
    on(op, k::add_scaled(&dev, ab, bb, yb, a.numel(), alpha, beta))?;
    Ok(y)
}

/// `acc += s·b` in place.
pub(crate) fn scaled_add_assign(op: &str, acc: &mut Tensor, b: &Tensor, s: f32) -> Result<()> {
    let dev = device_of(op, acc)?;
    let n = acc.numel();
    let bb = b.cuda(op)?.1;
    let accb = acc.cuda_out(op)?;
    on(op, k::axpy(&dev, bb, accb, n, s))
}

pub(crate) fn mul(op: &str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dev = device_of(op, a)?;
    let y = Tensor::cuda_uninit(&dev, a.shape())?;
    let (ab, bb, yb) = (a.cuda(op)?.1, b.cuda(op)?.1, y.cuda(op)?.1);
    on(op, k::mul(&dev, ab, bb, yb, a.numel()))?;
    Ok(y)
}

pub(crate) fn scale(op: &str, a: &Tensor, s: f32) -> Result<Tensor> {
    let dev = device_of(op, a)?;
    let y = Tensor::cuda_uninit(&dev, a.shape())?;
    on(
        op,
        k::scale(&dev, a.cuda(op)?.1, y.cuda(op)?.1, a.numel(), s),
    )?;
    Ok(y)
}

/// `clamp(a · x + b, lo, hi)` with `[a, b, lo, hi]`.
pub(crate) fn affine_clamp(op: &str, x: &Tensor, [a, b, lo, hi]: [f32; 4]) -> Result<Tensor> {
    let xb = x.cuda(op)?.1;
    super::new_output(op, x, x.shape(), |dev, y| {
        k::affine_clamp(dev, xb, y, x.numel(), a, b, lo, hi)
    })
}
