//! The slices of a volume `[N, D, H, W, C]` as a batch of 2D images, for the 3D losses that
//! run 2D networks over every slice of the three axes (LPIPS, the PatchGAN):
//! axis 0 gives `[N·D, H, W, C]`, axis 1 `[N·H, D, W, C]`, axis 2 `[N·W, D, H, C]` (image
//! `n·S + i` is slice `i` of sample `n`; see [`medvae_kernels::cpu::slices`]).
//!
//! Axes whose slices have the same shape can share one batch (a cube's three axes make one
//! batch of `3·N·S` images), so the primitive writes at an image offset into a batch the caller
//! owns, and its backward adds (`+=`) into a volume gradient the caller owns: the axes of one
//! volume accumulate into one gradient.

use super::common_device;
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::slices::{self as k, SliceDims};

fn dims(op: &str, shape: &[usize]) -> Result<SliceDims> {
    match *shape {
        [n, d, h, w, c] => Ok(SliceDims {
            n,
            spatial: [d, h, w],
            channels: c,
        }),
        _ => Err(RuntimeError::shape(
            op,
            format!("expected a [N, D, H, W, C] volume, got {shape:?}"),
        )),
    }
}

fn check_axis(op: &str, axis: usize) -> Result<()> {
    if axis < 3 {
        Ok(())
    } else {
        Err(RuntimeError::shape(
            op,
            format!("slice axis {axis}: expected 0 (depth), 1 (height) or 2 (width)"),
        ))
    }
}

/// The shape `[Σ images, rows, cols, C]` of one batch holding the slices of a volume of shape
/// `x_shape` across each of `axes`, in that order; the axes' slices must have one shape.
pub fn slice_batch_shape(x_shape: &[usize], axes: &[usize]) -> Result<Vec<usize>> {
    const OP: &str = "slice batch";
    let d = dims(OP, x_shape)?;
    let Some(&first) = axes.first() else {
        return Err(RuntimeError::shape(OP, "no axes to slice across"));
    };
    let hw = d.slice_hw(first);
    let mut images = 0;
    for &axis in axes {
        check_axis(OP, axis)?;
        if d.slice_hw(axis) != hw {
            return Err(RuntimeError::shape(
                OP,
                format!(
                    "slices across axes {axes:?} of {x_shape:?} differ in shape \
                     ({:?} vs {hw:?}): they cannot share a batch",
                    d.slice_hw(axis)
                ),
            ));
        }
        images += d.count(axis);
    }
    Ok(vec![images, hw[0], hw[1], d.channels])
}

/// The element offset of image `at` in `batch` (`[B, rows, cols, C]`), which must hold the
/// `count(axis)` slices of `d` across `axis` from there on.
fn batch_offset(op: &str, d: &SliceDims, axis: usize, batch: &[usize], at: usize) -> Result<usize> {
    let [rows, cols] = d.slice_hw(axis);
    let fits = matches!(*batch, [b, r, c, ch] if r == rows && c == cols && ch == d.channels
        && at + d.count(axis) <= b);
    if !fits {
        return Err(RuntimeError::shape(
            op,
            format!(
                "a batch of {:?} cannot hold the {} slices [{rows}, {cols}, {}] across axis \
                 {axis} from image {at} on",
                batch,
                d.count(axis),
                d.channels
            ),
        ));
    }
    Ok(at * rows * cols * d.channels)
}

/// Write the slices of the volume `x` across `axis` into `dst` (`[B, rows, cols, C]`) as images
/// `at .. at + N·S_axis`; the rest of `dst` is left as it is.
pub fn gather_slices_into(x: &Tensor, axis: usize, dst: &mut Tensor, at: usize) -> Result<()> {
    const OP: &str = "gather_slices";
    let dev = common_device(OP, &[x, dst])?;
    let d = dims(OP, x.shape())?;
    check_axis(OP, axis)?;
    let off = batch_offset(OP, &d, axis, dst.shape(), at)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::slices::gather_slices_into(OP, &d, axis, x, dst, off);
    }
    let _timer = super::cpu_only(OP, dev)?;
    let out = &mut dst.f32s_mut(OP)?[off..off + d.len()];
    k::gather_slices(&d, axis, x.f32s(OP)?, out)?;
    Ok(())
}

/// The adjoint of [`gather_slices_into`]: `dx +=` the volume gradient of images
/// `at .. at + N·S_axis` of the slice-batch gradient `g`.
pub fn scatter_add_slices(g: &Tensor, axis: usize, at: usize, dx: &mut Tensor) -> Result<()> {
    const OP: &str = "scatter_add_slices";
    let dev = common_device(OP, &[g, dx])?;
    let d = dims(OP, dx.shape())?;
    check_axis(OP, axis)?;
    let off = batch_offset(OP, &d, axis, g.shape(), at)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::slices::scatter_add_slices(OP, &d, axis, g, off, dx);
    }
    let _timer = super::cpu_only(OP, dev)?;
    let src = &g.f32s(OP)?[off..off + d.len()];
    k::scatter_add_slices(&d, axis, src, dx.f32s_mut(OP)?)?;
    Ok(())
}

/// An uninitialised tensor of `shape` on `x`'s device.
fn uninit_beside(op: &str, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if !x.device().is_cpu() {
        return super::on_cuda::slices::uninit_like(op, x, shape);
    }
    super::cpu_check(op, x.device())?;
    Ok(Tensor::uninit(shape))
}

/// A new batch (on `x`'s device) of the slices of `x` across each of `axes`, in that order
/// (shape [`slice_batch_shape`]).
pub fn gather_slices(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    const OP: &str = "gather_slices";
    let shape = slice_batch_shape(x.shape(), axes)?;
    // Uninitialised: the axes' images tile the whole batch.
    let mut out = uninit_beside(OP, x, &shape)?;
    let d = dims(OP, x.shape())?;
    let mut at = 0;
    for &axis in axes {
        gather_slices_into(x, axis, &mut out, at)?;
        at += d.count(axis);
    }
    Ok(out)
}

/// The backward of [`gather_slices`]: `dx +=` the volume gradient of the batch gradient `g`
/// (each voxel gains its one pixel per axis of `axes`).
pub fn gather_slices_backward(g: &Tensor, axes: &[usize], dx: &mut Tensor) -> Result<()> {
    const OP: &str = "gather_slices_backward";
    g.expect_shape(OP, "gradient", &slice_batch_shape(dx.shape(), axes)?)?;
    let d = dims(OP, dx.shape())?;
    let mut at = 0;
    for &axis in axes {
        scatter_add_slices(g, axis, at, dx)?;
        at += d.count(axis);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: &[usize], from: f32) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|i| from + i as f32).collect()).unwrap()
    }

    #[test]
    fn axes_share_a_batch_at_their_offsets() {
        // [1, 4, 4, 3, 2]: depth slices are 4×3, height slices 4×3, width slices 4×4.
        let shape = [1, 4, 4, 3, 2];
        let x = ramp(&shape, 0.0);
        let batch = gather_slices(&x, &[0, 1]).unwrap();
        assert_eq!(batch.shape(), &[8, 4, 3, 2]);
        let d = dims("test", &shape).unwrap();
        let xs = x.to_f32_vec();
        let bs = batch.to_f32_vec();
        for (k, axis) in [0usize, 1].into_iter().enumerate() {
            let mut want = vec![0.0f32; d.len()];
            k::gather_slices(&d, axis, &xs, &mut want).unwrap();
            assert_eq!(
                &bs[k * d.len()..(k + 1) * d.len()],
                &want[..],
                "axis {axis}"
            );
        }
        // A single axis into a larger batch leaves the rest alone.
        let mut dst = ramp(&[12, 4, 3, 2], -1000.0);
        let before = dst.to_f32_vec();
        gather_slices_into(&x, 1, &mut dst, 5).unwrap();
        let after = dst.to_f32_vec();
        let off = 5 * 4 * 3 * 2;
        assert_eq!(after[..off], before[..off]);
        assert_eq!(after[off + d.len()..], before[off + d.len()..]);
        assert_eq!(after[off..off + d.len()], bs[d.len()..]);
    }

    #[test]
    fn backward_adds_each_axis_from_its_offset() {
        let shape = [2, 3, 3, 3, 1];
        let x = ramp(&shape, 1.0);
        let g = ramp(&slice_batch_shape(&shape, &[0, 1, 2]).unwrap(), 0.5);
        let start = ramp(&shape, 7.0);
        let mut dx = start.clone();
        gather_slices_backward(&g, &[0, 1, 2], &mut dx).unwrap();
        // ⟨gather(x), g⟩ = ⟨x, dx − start⟩.
        let y = gather_slices(&x, &[0, 1, 2]).unwrap();
        let dot = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(p, q)| *p as f64 * *q as f64)
                .sum::<f64>()
        };
        let added: Vec<f32> = dx
            .to_f32_vec()
            .iter()
            .zip(start.to_f32_vec())
            .map(|(a, b)| a - b)
            .collect();
        let (lhs, rhs) = (
            dot(&y.to_f32_vec(), &g.to_f32_vec()),
            dot(&x.to_f32_vec(), &added),
        );
        assert!((lhs - rhs).abs() < 1e-6 * lhs.abs(), "{lhs} vs {rhs}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = ramp(&[1, 4, 4, 3, 1], 0.0);
        // Width slices are 4×4, depth slices 4×3: not one batch.
        let e = gather_slices(&x, &[0, 2]).unwrap_err().to_string();
        assert!(e.contains("cannot share a batch"), "{e}");
        assert!(gather_slices(&x, &[]).is_err());
        assert!(gather_slices(&x, &[3]).is_err());
        assert!(gather_slices(&ramp(&[1, 4, 4, 1], 0.0), &[0]).is_err());
        // Past the end of the batch, or a batch of the wrong image shape.
        let mut dst = Tensor::zeros(&[5, 4, 3, 1]);
        assert!(gather_slices_into(&x, 0, &mut dst, 2).is_err());
        assert!(gather_slices_into(&x, 0, &mut dst, 1).is_ok());
        let mut wrong = Tensor::zeros(&[8, 3, 4, 1]);
        assert!(gather_slices_into(&x, 0, &mut wrong, 0).is_err());
        let mut dx = Tensor::zeros(x.shape());
        assert!(gather_slices_backward(&Tensor::zeros(&[4, 4, 3, 1]), &[0, 1], &mut dx).is_err());
    }
}
