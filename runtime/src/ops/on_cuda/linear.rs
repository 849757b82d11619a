//! Linear layers on CUDA: the GEMM launchers in the precision set by
//! `crate::cuda::registry::set_precision` (plain f32 kernels at the default FP32).

use super::{backward_outputs, device_of, new_output, on};
use crate::cuda::ops::gemm as k;
use crate::cuda::registry::precision;
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::linear::LinearDims;

/// `y = x·Wᵀ + b` into a new tensor of `y_shape`.
pub(crate) fn linear_forward(
    op: &str,
    d: &LinearDims,
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
        k::linear_forward(dev, precision(), d, xb, wb, bias, y)
    })
}

/// `dx` (a new tensor, when `need_dx`), `dw += dyᵀ·x`, `db += Σ dy` (when given).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_backward(
    op: &str,
    d: &LinearDims,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
) -> Result<Option<Tensor>> {
    let dev = device_of(op, x)?;
    let (dx, dwb, dbb) = backward_outputs(op, &dev, x.shape(), need_dx, dw, db)?;
    let dxb = match &dx {
        Some(t) => Some(t.cuda(op)?.1),
        None => None,
    };
    let (xb, wb, dyb) = (x.cuda(op)?.1, w.cuda(op)?.1, dy.cuda(op)?.1);
    on(
        op,
        k::linear_backward(&dev, precision(), d, xb, wb, dyb, dxb, dwb, dbb),
    )?;
    Ok(dx)
}
