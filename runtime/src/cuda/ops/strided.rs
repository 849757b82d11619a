//! Launchers of `strided.cu`: gather a strided view of a buffer into a dense one, and scatter
//! (assign or add) a dense buffer into a view. Views as [`medvae_kernels::cpu::strided`];
//! the descriptor is passed by value, padded at the front with extent-1 dimensions.

use super::{check_f32, grid_1d, i32_of, i64_of, Args, KernelArg};
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::strided::{StridedView, MAX_VIEW_RANK};

const KERNEL: &str = "cuda strided";

/// `struct mv_view` of strided.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ViewArg {
    extent: [i32; MAX_VIEW_RANK],
    stride: [i64; MAX_VIEW_RANK],
    offset: i64,
}

// SAFETY: #[repr(C)] with the field types and order of `struct mv_view` (six ints, then six
// 64-bit strides at offset 24, which is 8-aligned, then the 64-bit offset).
unsafe impl KernelArg for ViewArg {}

fn view_arg(v: &StridedView) -> CudaResult<ViewArg> {
    let v = v.simplified();
    let rank = v.shape.len();
    if rank > MAX_VIEW_RANK {
        return Err(geometry(KERNEL, format!("view of rank {rank}")));
    }
    let mut arg = ViewArg {
        extent: [1; MAX_VIEW_RANK],
        stride: [0; MAX_VIEW_RANK],
        offset: i64_of(v.offset),
    };
    let pad = MAX_VIEW_RANK - rank;
    for (d, (&e, &s)) in v.shape.iter().zip(&v.strides).enumerate() {
        arg.extent[pad + d] = i32_of(KERNEL, "view extent", e)?;
        arg.stride[pad + d] = i64_of(s);
    }
    Ok(arg)
}

/// `dst[i] = src[view(i)]` for the `view.len()` elements of the view.
pub fn gather(
    dev: &CudaDevice,
    view: &StridedView,
    src: &DeviceBuffer,
    dst: &DeviceBuffer,
) -> CudaResult<()> {
    check_f32(KERNEL, "src", src, view.span())?;
    check_f32(KERNEL, "dst", dst, view.len())?;
    let arg = view_arg(view)?;
    Args::new()
        .buf(src)
        .buf(dst)
        .push(i64_of(view.len()))
        .push(arg)
        .launch(dev, "strided_gather", grid_1d(dev, view.len()))
}

/// `dst[view(i)] = src[i]` (`+=` with `accumulate`); the view must be disjoint (the caller
/// checks: the kernel has no atomics).
pub fn scatter(
    dev: &CudaDevice,
    view: &StridedView,
    src: &DeviceBuffer,
    dst: &DeviceBuffer,
    accumulate: bool,
) -> CudaResult<()> {
    check_f32(KERNEL, "src", src, view.len())?;
    check_f32(KERNEL, "dst", dst, view.span())?;
    if !view.is_disjoint() {
        return Err(geometry(
            KERNEL,
            format!(
                "the view {:?} (strides {:?}) writes some elements twice",
                view.shape, view.strides
            ),
        ));
    }
    let arg = view_arg(view)?;
    Args::new()
        .buf(src)
        .buf(dst)
        .push(i64_of(view.len()))
        .push(arg)
        .push(accumulate as i32)
        .launch(dev, "strided_scatter", grid_1d(dev, view.len()))
}
