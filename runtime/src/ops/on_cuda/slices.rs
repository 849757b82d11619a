//! The slices of a volume on CUDA (`slices.cu`): gathered into a batch at an image offset, and
//! added back into a volume gradient.

use super::{device_of, on};
use crate::cuda::ops::slices as sk;
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::slices::SliceDims;

/// An uninitialised batch of `shape` on `x`'s device (the gathers then cover all of it).
pub(crate) fn uninit_like(op: &str, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    Tensor::cuda_uninit(&device_of(op, x)?, shape)
}

/// `dst` from element `offset` on = the slices of `x` across `axis`.
pub(crate) fn gather_slices_into(
    op: &str,
    d: &SliceDims,
    axis: usize,
    x: &Tensor,
    dst: &mut Tensor,
    offset: usize,
) -> Result<()> {
    let dev = device_of(op, x)?;
    let xb = x.cuda(op)?.1;
    let db = dst.cuda_out(op)?;
    on(op, sk::gather_slices(&dev, d, axis, xb, db, offset))
}

/// `dx +=` the adjoint of the gather, from the part of `g` at element `offset`.
pub(crate) fn scatter_add_slices(
    op: &str,
    d: &SliceDims,
    axis: usize,
    g: &Tensor,
    offset: usize,
    dx: &mut Tensor,
) -> Result<()> {
    let dev = device_of(op, g)?;
    let gb = g.cuda(op)?.1;
    let db = dx.cuda_out(op)?;
    on(op, sk::scatter_add_slices(&dev, d, axis, gb, offset, db))
}
