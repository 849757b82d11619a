//! Rearrangements as strided views (see [`medvae_kernels::cpu::strided`]): a view of a tensor
//! gathered into a new dense tensor, and a dense tensor scattered (assigned or added) into a
//! view of another. Permutes, crops, row picks and broadcasts of the transformer and the CLIP
//! transform are written once with these and run wherever the tensors live.
//!
//! Views index a tensor's elements in memory order, ignoring its shape; only the element count
//! is checked against the view's reach.

use super::common_device;
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::strided as k;
pub use medvae_kernels::cpu::strided::{StridedView, MAX_VIEW_RANK};

/// A view, with shape errors naming `op`.
pub fn view(op: &str, offset: usize, shape: &[usize], strides: &[usize]) -> Result<StridedView> {
    StridedView::new(offset, shape, strides).map_err(|e| RuntimeError::shape(op, e.to_string()))
}

/// A new dense tensor of `view.shape` (on `x`'s device) holding the view of `x`.
pub fn gather(x: &Tensor, view: &StridedView) -> Result<Tensor> {
    const OP: &str = "strided gather";
    let dev = common_device(OP, &[x])?;
    view.check_fits(OP, "the source", x.numel())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::strided::gather(OP, x, view);
    }
    let _timer = super::cpu_only(OP, dev)?;
    let mut y = Tensor::uninit(&view.shape);
    k::gather(view, x.f32s(OP)?, y.f32s_mut(OP)?)?;
    Ok(y)
}

/// `dst[view] = src` (or `+=` with `accumulate`); `src` holds the view's elements densely,
/// the rest of `dst` is left as it is. The view must not write an element twice.
pub fn scatter(dst: &mut Tensor, view: &StridedView, src: &Tensor, accumulate: bool) -> Result<()> {
    const OP: &str = "strided scatter";
    let dev = common_device(OP, &[dst, src])?;
    view.check_fits(OP, "the destination", dst.numel())?;
    if src.numel() != view.len() {
        return Err(RuntimeError::shape(
            OP,
            format!(
                "the source {:?} does not have the {} elements of the view {:?}",
                src.shape(),
                view.len(),
                view.shape
            ),
        ));
    }
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::strided::scatter(OP, dst, view, src, accumulate);
    }
    let _timer = super::cpu_only(OP, dev)?;
    k::scatter(view, src.f32s(OP)?, dst.f32s_mut(OP)?, accumulate)?;
    Ok(())
}

/// A new zero tensor of `shape` (on `src`'s device) with `src` scattered into `view`: the
/// adjoint of [`gather`] through a disjoint view.
pub fn scatter_into_zeros(shape: &[usize], view: &StridedView, src: &Tensor) -> Result<Tensor> {
    let mut y = Tensor::zeros_on(shape, src.device())?;
    scatter(&mut y, view, src, false)?;
    Ok(y)
}

/// `[.., C]` → `[.., 1]`: the sum over the last axis, channel after channel (gathers of the
/// channel views added in order), on `x`'s device. For the few-channel sums of the stage-2
/// loss (a latent's channels, a grey image's three expanded gradients).
pub fn sum_last_axis(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "sum over the last axis";
    let (&c, lead) = x
        .shape()
        .split_last()
        .filter(|(&c, _)| c > 0)
        .ok_or_else(|| RuntimeError::shape(OP, format!("no channels in {:?}", x.shape())))?;
    let rows: usize = lead.iter().product();
    let channel = |ch| gather(x, &view(OP, ch, &[rows], &[c])?);
    let mut sum = channel(0)?;
    for ch in 1..c {
        super::elementwise::add_assign(&mut sum, &channel(ch)?)?;
    }
    let mut shape = lead.to_vec();
    shape.push(1);
    sum.reshape(&shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_then_scatter_round_trips_a_permutation() {
        // [2, 3, 4] -> [4, 2, 3] (axes 2, 0, 1).
        let x = Tensor::from_vec(&[2, 3, 4], (0..24).map(|i| i as f32).collect()).unwrap();
        let v = view("test", 0, &[4, 2, 3], &[1, 12, 4]).unwrap();
        let y = gather(&x, &v).unwrap();
        assert_eq!(y.shape(), &[4, 2, 3]);
        assert_eq!(y.to_f32_vec()[..4], [0.0, 4.0, 8.0, 12.0]);
        let back = scatter_into_zeros(&[2, 3, 4], &v, &y).unwrap();
        assert_eq!(back.to_f32_vec(), x.to_f32_vec());
        let mut twice = back.clone();
        scatter(&mut twice, &v, &y, true).unwrap();
        assert_eq!(twice.to_f32_vec()[5], 10.0);
    }

    #[test]
    fn last_axis_sums_follow_channel_order() {
        let x = Tensor::from_vec(&[2, 1, 3], vec![1.0, 2.0, 4.0, -1.0, 0.5, 8.0]).unwrap();
        let y = sum_last_axis(&x).unwrap();
        assert_eq!(y.shape(), &[2, 1, 1]);
        assert_eq!(y.to_f32_vec(), vec![7.0, 7.5]);
        assert!(sum_last_axis(&Tensor::zeros(&[2, 0])).is_err());
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let x = Tensor::zeros(&[6]);
        let v = view("test", 2, &[2, 3], &[3, 1]).unwrap();
        assert!(gather(&x, &v).is_err());
        let mut d = Tensor::zeros(&[8]);
        assert!(scatter(&mut d, &v, &Tensor::zeros(&[5]), false).is_err());
        assert!(scatter(&mut d, &v, &Tensor::zeros(&[6]), false).is_ok());
        assert!(view("test", 0, &[2], &[1, 1]).is_err());
    }
}
