//! Pointwise activations.

use super::{common_device, cpu_only};
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::activation as k;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Silu,
    Relu,
    LeakyRelu(f32),
    /// Exact (erf) GELU, PyTorch's `approximate='none'`.
    Gelu,
}

pub fn activation_forward(act: Activation, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "activation_forward";
    let dev = common_device(OP, &[x])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::activation_forward(OP, act, x);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(x.shape());
    let (xs, ys) = (x.f32s(OP)?, y.f32s_mut(OP)?);
    match act {
        Activation::Silu => k::silu_forward(xs, ys),
        Activation::Relu => k::relu_forward(xs, ys),
        Activation::LeakyRelu(s) => k::leaky_relu_forward(xs, s, ys),
        Activation::Gelu => k::gelu_forward(xs, ys),
    }?;
    Ok(y)
}

/// `dx` from the forward input `x` and the upstream gradient `dy`.
pub fn activation_backward(act: Activation, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "activation_backward";
    let dev = common_device(OP, &[x, dy])?;
    dy.expect_shape(OP, "dy", x.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::activation_backward(OP, act, x, dy);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut dx = Tensor::uninit(x.shape());
    let (xs, dys, dxs) = (x.f32s(OP)?, dy.f32s(OP)?, dx.f32s_mut(OP)?);
    match act {
        Activation::Silu => k::silu_backward(xs, dys, dxs),
        Activation::Relu => k::relu_backward(xs, dys, dxs),
        Activation::LeakyRelu(s) => k::leaky_relu_backward(xs, s, dys, dxs),
        Activation::Gelu => k::gelu_backward(xs, dys, dxs),
    }?;
    Ok(dx)
}

/// ReLU in place: the input's buffer becomes the output (VGG16 applies it to each
/// convolution's fresh output, so no second activation-sized buffer is needed).
pub fn relu_inplace(y: &mut Tensor) -> Result<()> {
    const OP: &str = "relu_inplace";
    let dev = common_device(OP, &[y])?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::relu_inplace(OP, y);
    }
    let _timer = cpu_only(OP, dev)?;
    k::relu_inplace(y.f32s_mut(OP)?);
    Ok(())
}

/// ReLU backward from the ReLU's output `y`, in place: `g = g·[y > 0]` (`y > 0 ⇔ x > 0`, so a
/// frozen network keeps only its outputs, which are the next units' inputs anyway).
pub fn relu_mask_inplace(g: &mut Tensor, y: &Tensor) -> Result<()> {
    const OP: &str = "relu_mask_inplace";
    let dev = common_device(OP, &[g, y])?;
    g.expect_shape(OP, "dy", y.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::pointwise::relu_mask_inplace(OP, g, y);
    }
    let _timer = cpu_only(OP, dev)?;
    k::relu_mask_inplace(y.f32s(OP)?, g.f32s_mut(OP)?)?;
    Ok(())
}
