//! LPIPS on the GPU (kernels/cuda/lpips.cu): the scaling layer and the per-layer normalised
//! distance. Operands are buffers plus element offsets, so the halves of one batch are used in
//! place. The distance's per-sample mean is `reduce_rows` over per-pixel values (deterministic).

use super::loss::reduce_rows;
use super::{check_f32, i32_of, i64_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};
use cudarc::driver::LaunchConfig;
use medvae_kernels::cpu::lpips::{LpipsDims, LpipsScaling};

const KERNEL: &str = "cuda lpips";

/// Threads per block of the warp-per-pixel kernels (8 pixels per block).
const WARP_BLOCK: u32 = 256;

/// A buffer and the element offset where an operand starts in it.
#[derive(Clone, Copy, Debug)]
pub struct At<'a> {
    pub buf: &'a DeviceBuffer,
    pub offset: usize,
}

impl<'a> At<'a> {
    pub fn new(buf: &'a DeviceBuffer, offset: usize) -> Self {
        At { buf, offset }
    }

    /// `len` elements from the offset must fit.
    fn check(&self, what: &'static str, len: usize) -> CudaResult<()> {
        check_f32(KERNEL, what, self.buf, self.offset + len)
    }
}

/// One warp per pixel, enough blocks to fill the device.
fn warp_grid(dev: &CudaDevice, pixels: usize) -> LaunchConfig {
    let per_block = (WARP_BLOCK / 32) as usize;
    let cap = dev.sm_count().max(1) as usize * 16;
    let blocks = pixels.div_ceil(per_block).min(cap) as u32;
    cfg((blocks, 1, 1), (WARP_BLOCK, 1, 1), 0)
}

/// `acc[s] += mean over the pixels of sample s of Σ_c w_c (n̂a_c − n̂b_c)²`, for `d.n` samples.
pub fn distance_forward(
    dev: &CudaDevice,
    d: &LpipsDims,
    fa: At,
    fb: At,
    w: &DeviceBuffer,
    acc: &DeviceBuffer,
) -> CudaResult<()> {
    fa.check("fa", d.len())?;
    fb.check("fb", d.len())?;
    check_f32(KERNEL, "w", w, d.channels)?;
    check_f32(KERNEL, "acc", acc, d.n)?;
    if d.is_empty() {
        return Ok(());
    }
    let total = d.n * d.pixels;
    let per_pixel = dev.alloc_f32(total)?;
    Args::new()
        .buf(fa.buf)
        .push(i64_of(fa.offset))
        .buf(fb.buf)
        .push(i64_of(fb.offset))
        .buf(w)
        .buf(&per_pixel)
        .push(i64_of(total))
        .push(i32_of(KERNEL, "channels", d.channels)?)
        .launch(dev, "lpips_dist_fwd", warp_grid(dev, total))?;
    let inv_pixels = (1.0 / d.pixels as f64) as f32;
    reduce_rows(dev, &per_pixel, d.n, d.pixels, acc, inv_pixels, true)
}

/// Adds `∂(Σ_s dp[s]·d_s)/∂fa` into `ga` and the same for `fb` into `gb` (each optional).
pub fn distance_backward(
    dev: &CudaDevice,
    d: &LpipsDims,
    fa: At,
    fb: At,
    w: &DeviceBuffer,
    dp: &DeviceBuffer,
    ga: Option<At>,
    gb: Option<At>,
) -> CudaResult<()> {
    fa.check("fa", d.len())?;
    fb.check("fb", d.len())?;
    check_f32(KERNEL, "w", w, d.channels)?;
    check_f32(KERNEL, "dp", dp, d.n)?;
    for (what, g) in [("ga", &ga), ("gb", &gb)] {
        if let Some(g) = g {
            g.check(what, d.len())?;
        }
    }
    if let (Some(a), Some(b)) = (&ga, &gb) {
        let disjoint = a.offset + d.len() <= b.offset || b.offset + d.len() <= a.offset;
        if a.buf.ptr() == b.buf.ptr() && !disjoint {
            return Err(geometry(KERNEL, "ga and gb overlap in one buffer"));
        }
    }
    if d.is_empty() || (ga.is_none() && gb.is_none()) {
        return Ok(());
    }
    let total = d.n * d.pixels;
    Args::new()
        .buf(fa.buf)
        .push(i64_of(fa.offset))
        .buf(fb.buf)
        .push(i64_of(fb.offset))
        .buf(w)
        .buf(dp)
        .opt(ga.map(|g| g.buf))
        .push(i64_of(ga.map_or(0, |g| g.offset)))
        .opt(gb.map(|g| g.buf))
        .push(i64_of(gb.map_or(0, |g| g.offset)))
        .push(i64_of(total))
        .push(i64_of(d.pixels))
        .push((1.0 / d.pixels as f64) as f32)
        .push(i32_of(KERNEL, "channels", d.channels)?)
        .launch(dev, "lpips_dist_bwd", warp_grid(dev, total))
}

fn check_cin(cin: usize) -> CudaResult<i32> {
    if cin == 1 || cin == 3 {
        Ok(cin as i32)
    } else {
        Err(geometry(
            KERNEL,
            format!("the scaling layer takes 1 or 3 channels, got {cin}"),
        ))
    }
}

/// The scaling layer: `pixels` pixels of `cin` (1 or 3) channels from `x` into 3 channels at `y`.
pub fn scaling_forward(
    dev: &CudaDevice,
    s: &LpipsScaling,
    pixels: usize,
    cin: usize,
    x: &DeviceBuffer,
    y: At,
) -> CudaResult<()> {
    let c = check_cin(cin)?;
    check_f32(KERNEL, "x", x, pixels * cin)?;
    y.check("y", pixels * 3)?;
    Args::new()
        .buf(x)
        .buf(y.buf)
        .push(i64_of(y.offset))
        .push(i64_of(pixels))
        .push(c)
        .push(s.shift[0])
        .push(s.shift[1])
        .push(s.shift[2])
        .push(s.scale[0])
        .push(s.scale[1])
        .push(s.scale[2])
        .launch(dev, "lpips_scale_fwd", super::grid_1d(dev, pixels * 3))
}

/// Its backward: `dx` (`pixels × cin`, overwritten) from the 3-channel gradient at `dy`.
pub fn scaling_backward(
    dev: &CudaDevice,
    s: &LpipsScaling,
    pixels: usize,
    cin: usize,
    dy: At,
    dx: &DeviceBuffer,
) -> CudaResult<()> {
    let c = check_cin(cin)?;
    dy.check("dy", pixels * 3)?;
    check_f32(KERNEL, "dx", dx, pixels * cin)?;
    Args::new()
        .buf(dy.buf)
        .push(i64_of(dy.offset))
        .buf(dx)
        .push(i64_of(pixels))
        .push(c)
        .push(s.scale[0])
        .push(s.scale[1])
        .push(s.scale[2])
        .launch(dev, "lpips_scale_bwd", super::grid_1d(dev, pixels * cin))
}
