//! Whole-tensor reductions read back to the host as f64: the scalars a training step logs and
//! branches on (loss sums, gradient norms, the finiteness check). On CUDA each is one
//! deterministic two-pass reduction and one 4-byte read back, which waits for the device.

use super::common_device;
use crate::error::Result;
use crate::tensor::Tensor;
use crate::Device;
use medvae_kernels::cpu::{loss as k_loss, reduce as k};

/// `Σ x` in f64 (on CUDA: f32 partials added in f64).
pub fn sum(x: &Tensor) -> Result<f64> {
    const OP: &str = "sum";
    #[cfg(feature = "cuda")]
    if !x.device().is_cpu() {
        return super::on_cuda::reduce::sum(OP, x);
    }
    Ok(k::sum_f64(x.f32s(OP)?))
}

/// `Σ x²` in f64: a squared L2 norm.
pub fn sum_squares(x: &Tensor) -> Result<f64> {
    const OP: &str = "sum_squares";
    #[cfg(feature = "cuda")]
    if !x.device().is_cpu() {
        return super::on_cuda::reduce::sum_squares(OP, x);
    }
    Ok(k::sum_squares_f64(x.f32s(OP)?))
}

/// `Σ |a − b|` in f64, unrounded.
pub fn abs_diff_sum(a: &Tensor, b: &Tensor) -> Result<f64> {
    const OP: &str = "abs_diff_sum";
    let dev = common_device(OP, &[a, b])?;
    b.expect_shape(OP, "b", a.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reduce::abs_diff_sum(OP, a, b);
    }
    let _timer = super::cpu_only(OP, dev)?;
    Ok(k_loss::l1_sum_exact(a.f32s(OP)?, b.f32s(OP)?)?)
}

/// How many elements are NaN or infinite.
pub fn count_non_finite(x: &Tensor) -> Result<usize> {
    const OP: &str = "count_non_finite";
    #[cfg(feature = "cuda")]
    if !x.device().is_cpu() {
        return super::on_cuda::reduce::count_non_finite(OP, x);
    }
    match x.f32s(OP) {
        Ok(v) => Ok(k::count_non_finite(v)),
        // Half storage: the widened copy.
        Err(_) => Ok(k::count_non_finite(&x.to_f32_vec())),
    }
}

/// How many elements of all of `xs` together are NaN or infinite. On CUDA the counts of the
/// tensors on one device accumulate on the device and are read back once (the finiteness check
/// of every gradient before an optimiser step: one wait instead of one per parameter).
pub fn count_non_finite_total(xs: &[Tensor]) -> Result<usize> {
    let mut total = 0;
    let mut by_device: Vec<(Device, Vec<&Tensor>)> = Vec::new();
    for x in xs {
        if x.device().is_cpu() {
            total += count_non_finite(x)?;
            continue;
        }
        match by_device.iter_mut().find(|(d, _)| *d == x.device()) {
            Some((_, group)) => group.push(x),
            None => by_device.push((x.device(), vec![x])),
        }
    }
    #[cfg(feature = "cuda")]
    for (_, group) in &by_device {
        total += super::on_cuda::reduce::count_non_finite_total("count_non_finite_total", group)?;
    }
    #[cfg(not(feature = "cuda"))]
    if let Some((d, _)) = by_device.first() {
        super::cpu_check("count_non_finite_total", *d)?;
    }
    Ok(total)
}

/// `acc[c] += Σ_r x[r, c]`, with `x` read as rows of `acc.numel()` elements (bias-like
/// gradients of a parameter broadcast over a batch: the class token, the position embedding).
pub fn add_row_sums(acc: &mut Tensor, x: &Tensor) -> Result<()> {
    const OP: &str = "add_row_sums";
    let dev = super::common_device(OP, &[acc, x])?;
    let cols = acc.numel();
    if cols == 0 || !x.numel().is_multiple_of(cols) {
        return Err(crate::error::RuntimeError::shape(
            OP,
            format!(
                "{:?} is not a whole number of rows of the accumulator's {cols} elements",
                x.shape()
            ),
        ));
    }
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::reduce::add_row_sums(OP, acc, x);
    }
    let _timer = super::cpu_only(OP, dev)?;
    medvae_kernels::cpu::reduce::add_row_sums(x.f32s(OP)?, acc.f32s_mut(OP)?)?;
    Ok(())
}

/// A tensor of `shape` filled with `value`, on `device`.
pub fn full(shape: &[usize], value: f32, device: Device) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if !device.is_cpu() {
        return super::on_cuda::reduce::full("full", shape, value, device);
    }
    let n = shape.iter().product();
    Tensor::from_vec(shape, vec![value; n])?.into_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_on_the_cpu() {
        let a = Tensor::from_vec(&[4], vec![1.0, -2.0, 3.5, 0.0]).unwrap();
        let b = Tensor::from_vec(&[4], vec![0.5, 1.0, 3.5, -1.0]).unwrap();
        assert_eq!(sum(&a).unwrap(), 2.5);
        assert_eq!(sum_squares(&a).unwrap(), 1.0 + 4.0 + 12.25);
        assert_eq!(abs_diff_sum(&a, &b).unwrap(), 0.5 + 3.0 + 0.0 + 1.0);
        assert_eq!(count_non_finite(&a).unwrap(), 0);
        let bad = Tensor::from_vec(&[3], vec![f32::NAN, 1.0, f32::NEG_INFINITY]).unwrap();
        assert_eq!(count_non_finite(&bad).unwrap(), 2);
        assert!(abs_diff_sum(&a, &bad).is_err());
        let total = count_non_finite_total(&[a.clone(), bad.clone(), bad]).unwrap();
        assert_eq!(total, 4);
        assert_eq!(count_non_finite_total(&[]).unwrap(), 0);
        let f = full(&[2, 3], 0.25, Device::Cpu).unwrap();
        let mut acc = Tensor::from_vec(&[2], vec![1.0, -1.0]).unwrap();
        let rows = Tensor::from_vec(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        add_row_sums(&mut acc, &rows).unwrap();
        assert_eq!(acc.to_f32_vec(), vec![10.0, 11.0]);
        assert!(add_row_sums(&mut acc, &Tensor::zeros(&[5])).is_err());
        assert_eq!(f.to_f32_vec(), vec![0.25; 6]);
    }
}
