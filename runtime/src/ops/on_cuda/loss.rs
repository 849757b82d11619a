//! Loss reductions on CUDA: the KL term, the L1 mean and the discriminator's hinge loss. The
//! scalar losses read their value back to the host (the only ops here that wait).

use super::{device_of, on, read_scalar};
use crate::cuda::ops::loss as lk;
use crate::error::Result;
use crate::tensor::Tensor;
use medvae_kernels::cpu::loss::KlDims;

pub(crate) fn kl_forward(
    op: &str,
    d: &KlDims,
    moments: &Tensor,
    out_shape: &[usize],
) -> Result<Tensor> {
    let dev = device_of(op, moments)?;
    let kl = Tensor::cuda_uninit(&dev, out_shape)?;
    on(
        op,
        lk::kl_forward(&dev, d, moments.cuda(op)?.1, kl.cuda(op)?.1),
    )?;
    Ok(kl)
}

pub(crate) fn kl_backward(op: &str, d: &KlDims, moments: &Tensor, dkl: &Tensor) -> Result<Tensor> {
    let dev = device_of(op, moments)?;
    let dm = Tensor::cuda_uninit(&dev, moments.shape())?;
    on(
        op,
        lk::kl_backward(
            &dev,
            d,
            moments.cuda(op)?.1,
            Some(dkl.cuda(op)?.1),
            dm.cuda(op)?.1,
            1.0,
            None,
            0.0,
        ),
    )?;
    Ok(dm)
}

/// `mean |a − b|`, read back to the host (waits for the device).
pub(crate) fn l1_mean_forward(op: &str, a: &Tensor, b: &Tensor) -> Result<f32> {
    let dev = device_of(op, a)?;
    let n = a.numel();
    let scale = if n == 0 { 0.0 } else { 1.0 / n as f32 };
    let (ab, bb) = (a.cuda(op)?.1, b.cuda(op)?.1);
    // The f32 result widened and narrowed again: exact.
    Ok(read_scalar(op, &dev, |out| lk::l1_forward(&dev, ab, bb, n, out, scale))? as f32)
}

pub(crate) fn l1_mean_backward(op: &str, a: &Tensor, b: &Tensor, dloss: f32) -> Result<Tensor> {
    let dev = device_of(op, a)?;
    let n = a.numel();
    let da = Tensor::cuda_uninit(&dev, a.shape())?;
    let scale = if n == 0 { 0.0 } else { dloss / n as f32 };
    on(
        op,
        lk::l1_backward(
            &dev,
            a.cuda(op)?.1,
            b.cuda(op)?.1,
            da.cuda(op)?.1,
            n,
            scale,
            None,
            0.0,
        ),
    )?;
    Ok(da)
}

/// The discriminator's hinge loss, read back to the host (waits for the device).
pub(crate) fn hinge_forward(op: &str, real: &Tensor, fake: &Tensor) -> Result<f32> {
    let dev = device_of(op, real)?;
    let (rb, fb) = (real.cuda(op)?.1, fake.cuda(op)?.1);
    let (nr, nf) = (real.numel(), fake.numel());
    Ok(read_scalar(op, &dev, |out| lk::hinge_forward(&dev, rb, nr, fb, nf, out))? as f32)
}

pub(crate) fn hinge_backward(
    op: &str,
    real: &Tensor,
    fake: &Tensor,
    dloss: f32,
) -> Result<(Tensor, Tensor)> {
    let dev = device_of(op, real)?;
    let dr = Tensor::cuda_uninit(&dev, real.shape())?;
    let df = Tensor::cuda_uninit(&dev, fake.shape())?;
    on(
        op,
        lk::hinge_backward(
            &dev,
            real.cuda(op)?.1,
            real.numel(),
            fake.cuda(op)?.1,
            fake.numel(),
            dr.cuda(op)?.1,
            df.cuda(op)?.1,
            dloss,
            None,
            0.0,
        ),
    )?;
    Ok((dr, df))
}
