//! LPIPS' ops on CUDA: the scaling layer and the per-layer distance (kernels/cuda/lpips.cu).
//! Operands stay where they are; samples of a batch are addressed by element offsets.

use super::{device_of, on};
use crate::cuda::ops::lpips::{self as lk, At};
use crate::error::Result;
use crate::ops::perceptual::{GradSides, LpipsDims, LpipsScaling, Samples};
use crate::tensor::Tensor;

/// The operand `s` as a buffer and the offset of its first sample.
fn at<'a>(op: &str, s: &Samples<'a>, per_sample: usize) -> Result<At<'a>> {
    Ok(At::new(s.tensor.cuda(op)?.1, s.first * per_sample))
}

pub(crate) fn distance_forward(
    op: &str,
    d: &LpipsDims,
    a: Samples,
    b: Samples,
    w: &Tensor,
    acc: &mut Tensor,
) -> Result<()> {
    let dev = device_of(op, a.tensor)?;
    let per = d.pixels * d.channels;
    let (fa, fb, wb) = (at(op, &a, per)?, at(op, &b, per)?, w.cuda(op)?.1);
    let accb = acc.cuda_out(op)?;
    on(op, lk::distance_forward(&dev, d, fa, fb, wb, accb))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn distance_backward(
    op: &str,
    d: &LpipsDims,
    a: Samples,
    b: Samples,
    w: &Tensor,
    dp: &Tensor,
    grad: &mut Tensor,
    sides: GradSides,
) -> Result<()> {
    let dev = device_of(op, a.tensor)?;
    let per = d.pixels * d.channels;
    let (fa, fb) = (at(op, &a, per)?, at(op, &b, per)?);
    let (wb, dpb) = (w.cuda(op)?.1, dp.cuda(op)?.1);
    let g = grad.cuda_out(op)?;
    let ga = sides.a.map(|first| At::new(g, first * per));
    let gb = sides.b.map(|first| At::new(g, first * per));
    on(op, lk::distance_backward(&dev, d, fa, fb, wb, dpb, ga, gb))
}

/// Each image of `xs` scaled into its samples of one new tensor of `y_shape`.
pub(crate) fn scaling_forward(
    op: &str,
    s: &LpipsScaling,
    xs: &[&Tensor],
    cin: usize,
    y_shape: &[usize],
) -> Result<Tensor> {
    let dev = device_of(op, xs[0])?;
    let y = Tensor::cuda_uninit(&dev, y_shape)?;
    let yb = y.cuda(op)?.1;
    let mut offset = 0;
    for x in xs {
        let pixels = x.numel() / cin;
        on(
            op,
            lk::scaling_forward(&dev, s, pixels, cin, x.cuda(op)?.1, At::new(yb, offset)),
        )?;
        offset += 3 * pixels;
    }
    Ok(y)
}

pub(crate) fn scaling_backward(
    op: &str,
    s: &LpipsScaling,
    dy: &Tensor,
    first: usize,
    pixels: usize,
    cin: usize,
    x_shape: &[usize],
) -> Result<Tensor> {
    let dev = device_of(op, dy)?;
    let dx = Tensor::cuda_uninit(&dev, x_shape)?;
    let per_sample = 3 * pixels / x_shape[0].max(1);
    let g = At::new(dy.cuda(op)?.1, first * per_sample);
    on(
        op,
        lk::scaling_backward(&dev, s, pixels, cin, g, dx.cuda(op)?.1),
    )?;
    Ok(dx)
}
