//! Strided gathers and scatters on CUDA (`strided.cu`).

use super::{device_of, new_output, on};
use crate::cuda::ops::strided as sk;
use crate::error::Result;
use crate::ops::strided::StridedView;
use crate::tensor::Tensor;

pub(crate) fn gather(op: &str, x: &Tensor, view: &StridedView) -> Result<Tensor> {
    let xb = x.cuda(op)?.1;
    new_output(op, x, &view.shape, |dev, y| sk::gather(dev, view, xb, y))
}

pub(crate) fn scatter(
    op: &str,
    dst: &mut Tensor,
    view: &StridedView,
    src: &Tensor,
    accumulate: bool,
) -> Result<()> {
    let dev = device_of(op, src)?;
    let sb = src.cuda(op)?.1;
    let db = dst.cuda_out(op)?;
    on(op, sk::scatter(&dev, view, sb, db, accumulate))
}
