//! Convolution on CUDA: implicit-GEMM kernels in the precision set by
//! `crate::cuda::registry::set_precision` (FP32 direct kernels by default).

use super::{device_of, on};
use crate::cuda::ops::conv as k;
use crate::cuda::ops::loss::reduce_cols_acc;
use crate::cuda::registry::precision;
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::conv::ConvGeometry;

/// `y = conv(x, w) + b` into a new tensor of `y_shape`.
pub(crate) fn conv_forward(
    op: &str,
    g: &ConvGeometry,
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
    on(
        op,
        k::conv_forward(
            &dev,
            g,
            precision(),
            x.cuda(op)?.1,
            w.cuda(op)?.1,
            bias,
            y.cuda(op)?.1,
            0.0,
        ),
    )?;
    Ok(y)
}

/// Weight and bias gradients, accumulated into `dw` / `db` (either may be absent).
pub(crate) fn conv_backward_params(
    op: &str,
    g: &ConvGeometry,
    x: &Tensor,
    dy: &Tensor,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
) -> Result<()> {
    let dev = device_of(op, x)?;
    match (dw, db) {
        (Some(dw), db) => {
            let dbias = match db {
                Some(db) => Some(db.cuda_out(op)?),
                None => None,
            };
            let dwb = dw.cuda_out(op)?;
            on(
                op,
                k::conv_backward_weight(
                    &dev,
                    g,
                    precision(),
                    x.cuda(op)?.1,
                    dy.cuda(op)?.1,
                    dwb,
                    dbias,
                ),
            )
        }
        (None, Some(db)) => {
            // Bias gradient alone (frozen weight, trainable bias): column sums of dy.
            let rows = dy.numel() / g.cout.max(1);
            let dyb = dy.cuda(op)?.1;
            on(
                op,
                reduce_cols_acc(&dev, dyb, rows, g.cout, db.cuda_out(op)?),
            )
        }
        (None, None) => Ok(()),
    }
}

/// `dx` of a convolution, as a new tensor of `x`'s shape.
pub(crate) fn conv_backward_data(
    op: &str,
    g: &ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let dx = Tensor::cuda_uninit(&dev, x.shape())?;
    on(
        op,
        k::conv_backward_data(
            &dev,
            g,
            precision(),
            dy.cuda(op)?.1,
            w.cuda(op)?.1,
            dx.cuda(op)?.1,
            0.0,
        ),
    )?;
    Ok(dx)
}
