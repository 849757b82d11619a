//! Whole-tensor reductions on CUDA, each read back as one scalar (waits for the device), and
//! filled tensors.

use super::{device_of, on, read_scalar};
use crate::cuda::ops::{elementwise as ew, loss as lk};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor_cuda::open;
use crate::Device;

pub(crate) fn sum(op: &str, x: &Tensor) -> Result<f64> {
    let dev = device_of(op, x)?;
    let xb = x.cuda(op)?.1;
    read_scalar(op, &dev, |out| {
        lk::sum(&dev, xb, x.numel(), out, 1.0, false)
    })
}

pub(crate) fn sum_squares(op: &str, x: &Tensor) -> Result<f64> {
    let dev = device_of(op, x)?;
    let xb = x.cuda(op)?.1;
    read_scalar(op, &dev, |out| lk::sum_squares(&dev, xb, x.numel(), out))
}

pub(crate) fn abs_diff_sum(op: &str, a: &Tensor, b: &Tensor) -> Result<f64> {
    let dev = device_of(op, a)?;
    let (ab, bb) = (a.cuda(op)?.1, b.cuda(op)?.1);
    read_scalar(op, &dev, |out| {
        lk::l1_forward(&dev, ab, bb, a.numel(), out, 1.0)
    })
}

pub(crate) fn count_non_finite(op: &str, x: &Tensor) -> Result<usize> {
    let dev = device_of(op, x)?;
    let xb = x.cuda(op)?.1;
    let c = read_scalar(op, &dev, |out| {
        lk::count_non_finite(&dev, xb, x.numel(), out)
    })?;
    Ok(c as usize)
}

/// The non-finite count of every tensor of `xs` (all on one device), accumulated on the device
/// and read back once.
pub(crate) fn count_non_finite_total(op: &str, xs: &[&Tensor]) -> Result<usize> {
    let Some(first) = xs.first() else {
        return Ok(0);
    };
    let dev = device_of(op, first)?;
    let mut bufs = Vec::with_capacity(xs.len());
    for x in xs {
        let (d, b) = x.cuda(op)?;
        if !std::sync::Arc::ptr_eq(d, &dev) {
            return Err(crate::RuntimeError::Other(format!(
                "{op}: tensors on different devices"
            )));
        }
        bufs.push((b, x.numel()));
    }
    let c = read_scalar(op, &dev, |out| {
        ew::fill(&dev, out, 1, 0.0)?;
        bufs.iter()
            .try_for_each(|(b, n)| lk::count_non_finite_acc(&dev, b, *n, out))
    })?;
    Ok(c as usize)
}

pub(crate) fn full(op: &str, shape: &[usize], value: f32, device: Device) -> Result<Tensor> {
    let Device::Cuda(ordinal) = device else {
        return Err(crate::RuntimeError::Other(format!(
            "{op}: not a CUDA device"
        )));
    };
    let dev = open(op, ordinal)?;
    let t = Tensor::cuda_uninit(&dev, shape)?;
    on(op, ew::fill(&dev, t.cuda(op)?.1, t.numel(), value))?;
    Ok(t)
}

/// `Σ relu(1 + sign·x)`, read back.
pub(crate) fn hinge_half_forward(op: &str, x: &Tensor, sign: f32) -> Result<f64> {
    let dev = device_of(op, x)?;
    let xb = x.cuda(op)?.1;
    read_scalar(op, &dev, |out| {
        lk::hinge_half_forward(&dev, xb, x.numel(), sign, out)
    })
}

pub(crate) fn hinge_half_backward(op: &str, x: &Tensor, sign: f32, g: f32) -> Result<Tensor> {
    let dev = device_of(op, x)?;
    let dx = Tensor::cuda_uninit(&dev, x.shape())?;
    on(
        op,
        lk::hinge_half_backward(&dev, x.cuda(op)?.1, x.numel(), sign, g, dx.cuda(op)?.1),
    )?;
    Ok(dx)
}

/// `acc[c] += Σ_r x[r, c]` (`reduce_cols_acc`, the bias-gradient kernel).
pub(crate) fn add_row_sums(op: &str, acc: &mut Tensor, x: &Tensor) -> Result<()> {
    let dev = device_of(op, x)?;
    let cols = acc.numel();
    let xb = x.cuda(op)?.1;
    let ab = acc.cuda_out(op)?;
    on(
        op,
        lk::reduce_cols_acc(&dev, xb, x.numel() / cols, cols, ab),
    )
}
