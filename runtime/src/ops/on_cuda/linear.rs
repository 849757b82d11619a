//! Linear layers and bicubic resize on CUDA: the GEMM launchers in the precision set by
//! `crate::cuda::registry::set_precision` (plain f32 kernels at the default FP32), and the
//! separable resampling passes with their weight tables uploaded per call.

use super::{backward_outputs, device_of, on};
use crate::cuda::ops::gemm as k;
use crate::cuda::ops::sample::{resize_backward, resize_forward, GpuResizePlan};
use crate::cuda::registry::precision;
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::linear::LinearDims;
use medvae_kernels::cpu::resize::ResizePlan;

/// `y = x·Wᵀ + b` into a new tensor of `y_shape`.
pub(crate) fn linear_forward(
    op: &str,
    d: &LinearDims,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    y_shape: &[usize],
) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let y = Tensor::cuda_uninit(&dev, y_shape)?;
    let bias = match b {
        Some(b) => Some(b.cuda(op)?.1),
        None => None,
    };
    let (xb, wb, yb) = (x.cuda(op)?.1, w.cuda(op)?.1, y.cuda(op)?.1);
    on(
        op,
        k::linear_forward(&dev, precision(), d, xb, wb, bias, yb),
    )?;
    Ok(y)
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

/// Resize `x` `[n, h, w, c]` by `plan` into a new tensor of `y_shape`.
pub(crate) fn resize_forward_op(
    op: &str,
    plan: &ResizePlan,
    (n, c): (usize, usize),
    x: &Tensor,
    y_shape: &[usize],
) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let gp = on(op, GpuResizePlan::new(&dev, plan))?;
    let y = Tensor::cuda_uninit(&dev, y_shape)?;
    on(
        op,
        resize_forward(&dev, &gp, n, c, x.cuda(op)?.1, y.cuda(op)?.1),
    )?;
    Ok(y)
}

/// The transposed map of [`resize_forward_op`]: dy to a new tensor of `x_shape`.
pub(crate) fn resize_backward_op(
    op: &str,
    plan: &ResizePlan,
    (n, c): (usize, usize),
    dy: &Tensor,
    x_shape: &[usize],
) -> Result<Tensor> {
    let dev = device_of(op, dy)?;
    let gp = on(op, GpuResizePlan::new(&dev, plan))?;
    let dx = Tensor::cuda_uninit(&dev, x_shape)?;
    on(
        op,
        resize_backward(&dev, &gp, n, c, dy.cuda(op)?.1, dx.cuda(op)?.1),
    )?;
    Ok(dx)
}
