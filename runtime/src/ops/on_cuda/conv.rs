//! Convolution on CUDA: implicit-GEMM kernels in the precision set by
//! `crate::cuda::registry::set_precision` (FP32 direct kernels by default).

use super::{device_of, new_output, on, param_grad_outputs};
use crate::cuda::ops::conv as k;
use crate::cuda::registry::precision;
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::conv::ConvGeometry;
use std::borrow::Cow;

/// `y = conv(x, w) + b` into a new tensor of `y_shape`.
pub(crate) fn conv_forward(
    op: &str,
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y_shape: &[usize],
) -> Result<Tensor> {
    let bias = match b {
        Some(b) => Some(b.cuda(op)?.1),
        None => None,
    };
    let (xb, wb) = (x.cuda(op)?.1, w.cuda(op)?.1);
    new_output(op, x, y_shape, |dev, y| {
        k::conv_forward(dev, g, precision(), xb, wb, bias, y, 0.0)
    })
}

/// The gradients of a convolution in one call (so that the streamed BF16 path rounds dy once):
/// `dx` as a new tensor of `x`'s shape when `need_dx` (allocated after the weight gradient, and
/// after an owned `x` is released, see [`k::conv_backward_new_dx`]), weight and bias gradients
/// accumulated into `dw` / `db` (either may be absent).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_backward(
    op: &str,
    g: &ConvGeometry,
    x: Cow<'_, Tensor>,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
) -> Result<Option<Tensor>> {
    let dev = device_of(op, &x)?;
    let x_shape = x.shape().to_vec();
    let (dwb, dbb) = param_grad_outputs(op, dw, db)?;
    let (wb, dyb) = (w.cuda(op)?.1, dy.cuda(op)?.1);
    let xb = match x {
        Cow::Borrowed(t) => k::ConvInput::Borrowed(t.cuda(op)?.1),
        Cow::Owned(t) => k::ConvInput::Shared(t.into_cuda_buffer(op)?),
    };
    if !need_dx {
        let done = k::conv_backward(
            &dev,
            g,
            precision(),
            Some(&xb),
            Some(wb),
            dyb,
            None,
            dwb,
            dbb,
        );
        on(op, done)?;
        return Ok(None);
    }
    let dx = k::conv_backward_new_dx(&dev, g, precision(), Some(xb), wb, dyb, dwb, dbb);
    Tensor::from_cuda_buffer(&dev, &x_shape, on(op, dx)?).map(Some)
}
