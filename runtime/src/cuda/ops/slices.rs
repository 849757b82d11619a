//! Launchers of `slices.cu`: the slices of a volume across one axis gathered into (part of) a
//! batch of 2D images, and the adjoint that adds them back into a volume gradient. Geometry as
//! [`medvae_kernels::cpu::slices`]; the batch operand may be a larger buffer holding several
//! axes, addressed from an element offset.

use super::{check_f32, grid_1d, i32_of, i64_of, Args};
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::slices::SliceDims;

const KERNEL: &str = "cuda slices";

/// `[n, d, h, w, c, axis]` as kernel arguments.
fn dims_args(d: &SliceDims, axis: usize) -> CudaResult<[i32; 6]> {
    if axis > 2 {
        return Err(geometry(
            KERNEL,
            format!("slice axis {axis}: expected 0, 1 or 2"),
        ));
    }
    let i = |w: &str, v: usize| i32_of(KERNEL, w, v);
    Ok([
        i("n", d.n)?,
        i("d", d.spatial[0])?,
        i("h", d.spatial[1])?,
        i("w", d.spatial[2])?,
        i("channels", d.channels)?,
        axis as i32,
    ])
}

/// `dst[offset .. offset + d.len()]` = the slices of the volume `x` across `axis`.
pub fn gather_slices(
    dev: &CudaDevice,
    d: &SliceDims,
    axis: usize,
    x: &DeviceBuffer,
    dst: &DeviceBuffer,
    offset: usize,
) -> CudaResult<()> {
    let a = dims_args(d, axis)?;
    check_f32(KERNEL, "x", x, d.len())?;
    check_f32(KERNEL, "dst", dst, offset + d.len())?;
    let mut args = Args::new();
    args.buf(x).buf(dst).push(i64_of(offset));
    for v in a {
        args.push(v);
    }
    args.launch(dev, "slices_gather", grid_1d(dev, d.len()))
}

/// `dx += ` the adjoint of [`gather_slices`] applied to `g[offset .. offset + d.len()]`.
pub fn scatter_add_slices(
    dev: &CudaDevice,
    d: &SliceDims,
    axis: usize,
    g: &DeviceBuffer,
    offset: usize,
    dx: &DeviceBuffer,
) -> CudaResult<()> {
    let a = dims_args(d, axis)?;
    check_f32(KERNEL, "g", g, offset + d.len())?;
    check_f32(KERNEL, "dx", dx, d.len())?;
    let mut args = Args::new();
    args.buf(g).push(i64_of(offset)).buf(dx);
    for v in a {
        args.push(v);
    }
    args.launch(dev, "slices_scatter_add", grid_1d(dev, d.len()))
}
