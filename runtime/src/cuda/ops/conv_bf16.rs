//! The streamed BF16 convolution kernels (`kernels/cuda/conv_bf16.cu`): the operands are
//! rounded to bf16 buffers once, then the implicit GEMMs copy 16-byte runs straight into a
//! 4-stage shared-memory ring with cp.async and read fragments with ldmatrix. Used by
//! [`super::conv`] for `ConvPrecision::Bf16` whenever every channel count is a multiple of 8
//! (a run of eight channels must not straddle a tap); the staged kernels of `conv_igemm.cu`
//! remain for the rest (channel counts that are not multiples of 8; the thinnest of those,
//! with at most 4 channels on a side, take `conv_thin.cu`) and as a comparison.
//!
//! The rounding is the same round-to-nearest-even as the staged kernels' (`mv_f32_to_bf16`), so
//! the two paths differ only in f32 summation order.

use super::conv::ConvGeom;
use super::conv_plan::{tile, WgradPlan};
use super::{grid_1d, i32_of, Args, KernelSwitch};
use crate::cuda::device::cfg;
use crate::cuda::error::CudaResult;
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::conv::ConvGeometry;

const KERNEL: &str = "cuda conv (bf16 streamed)";

/// k-tile, row padding and pipeline depth of `medvae_igemm_bf16.cuh` / `conv_bf16.cu`.
pub(super) const BK: usize = 32;
const PAD: usize = 8;
const STAGES: usize = 4;

static STREAMED: KernelSwitch = KernelSwitch::new("MEDVAE_CONV_BF16", "staged");

/// Whether BF16 convolutions and GEMMs use the streamed kernels where they apply. On by default;
/// `MEDVAE_CONV_BF16=staged` in the environment, or [`set_streamed`], turns them off (to compare
/// the two on one card).
pub fn streamed() -> bool {
    STREAMED.on()
}

/// Choose the streamed (true) or staged (false) BF16 convolution kernels from now on.
pub fn set_streamed(on: bool) {
    STREAMED.set(on);
}

/// The streamed kernels take `g` (all channel counts multiples of 8) and are switched on.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    streamed() && g.cin.is_multiple_of(8) && g.cout.is_multiple_of(8)
}

/// `n` f32 of `src` rounded to a new bf16 buffer.
pub(super) fn to_bf16(dev: &CudaDevice, src: &DeviceBuffer, n: usize) -> CudaResult<DeviceBuffer> {
    to_bf16_at(dev, src.ptr(), n)
}

/// `n` f32 from device address `src` (inside a buffer the caller has checked) rounded to a new
/// bf16 buffer.
pub(super) fn to_bf16_at(dev: &CudaDevice, src: u64, n: usize) -> CudaResult<DeviceBuffer> {
    // Round the byte count up to a multiple of 16: the kernels' 16-byte runs never read past
    // the last element, but the pool hands out whole blocks anyway.
    let out = dev.alloc((2 * n).div_ceil(16) * 16)?;
    Args::new().push(src).buf(&out).push(n as i64).launch(
        dev,
        "cvt_f32_bf16",
        grid_1d(dev, n.div_ceil(4)),
    )?;
    Ok(out)
}

/// Dynamic shared memory of one block of the streamed kernels (convolutions and `gemm_bf16.cu`):
/// STAGES x (A tile + B tile) bf16, each tile `rows` by BK, stored k-major (`[rows][BK + PAD]`)
/// or row-major (`[BK][rows + PAD]`).
pub(super) fn smem_bytes(edge: usize, a_kmajor: bool, b_kmajor: bool) -> u32 {
    let t = |kmajor: bool| {
        if kmajor {
            edge * (BK + PAD)
        } else {
            BK * (edge + PAD)
        }
    };
    (STAGES * (t(a_kmajor) + t(b_kmajor)) * 2) as u32
}

/// `y = conv(x, w) + bias + beta * y` from bf16 `xh`, `wh` (the launcher
/// `super::conv::conv_forward` has checked the buffers and the geometry).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    xh: &DeviceBuffer,
    wh: &DeviceBuffer,
    bias: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    let m = g.output_len() / g.cout;
    let (edge, threads, name) = tile(dev, m, g.cout);
    let grid = (m.div_ceil(edge) as u32, g.cout.div_ceil(edge) as u32, 1);
    Args::new()
        .push(cg)
        .buf(xh)
        .buf(wh)
        .opt(bias)
        .buf(y)
        .push(beta)
        .launch(
            dev,
            &format!("conv_fwd_bf16s_{name}"),
            cfg(grid, (threads, 1, 1), smem_bytes(edge, true, false)),
        )
}

/// `dx = conv^T(dy, w) + beta * dx` from bf16 `dyh`, `wh`, by the data-gradient problem (for
/// strided convolutions; stride 1 goes through [`forward`] with flipped weights).
pub(super) fn backward_data(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    dyh: &DeviceBuffer,
    wh: &DeviceBuffer,
    dx: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    let m = g.input_len() / g.cin;
    let (edge, threads, name) = tile(dev, m, g.cin);
    let grid = (m.div_ceil(edge) as u32, g.cin.div_ceil(edge) as u32, 1);
    Args::new()
        .push(cg)
        .buf(dyh)
        .buf(wh)
        .buf(dx)
        .push(beta)
        .launch(
            dev,
            &format!("conv_dgrad_bf16s_{name}"),
            cfg(grid, (threads, 1, 1), smem_bytes(edge, true, true)),
        )
}

/// `dw += x^T dy` from bf16 `xh`, `dyh`, with the block tile and the split of the pixel
/// reduction that `super::conv` planned.
pub(super) fn backward_weight(
    dev: &CudaDevice,
    cg: ConvGeom,
    xh: &DeviceBuffer,
    dyh: &DeviceBuffer,
    dw: &DeviceBuffer,
    plan: &WgradPlan,
) -> CudaResult<()> {
    let grid = (plan.grid.0, plan.grid.1, plan.splits as u32);
    Args::new()
        .push(cg)
        .buf(xh)
        .buf(dyh)
        .buf(dw)
        .push(i32_of(KERNEL, "tiles per split", plan.per_split)?)
        .launch(
            dev,
            &format!("conv_wgrad_bf16s_{}", plan.name),
            cfg(
                grid,
                (plan.threads, 1, 1),
                smem_bytes(plan.edge, false, false),
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher's shared-memory figure must equal the kernels' (`igemm_bf16_smem_bytes`:
    /// 4 stages of a 128x40 A tile and a 32x136 B tile for the 128x128 forward, ...).
    #[test]
    fn shared_memory_matches_the_kernel_layout() {
        assert_eq!(smem_bytes(128, true, false), 4 * (128 * 40 + 32 * 136) * 2);
        assert_eq!(smem_bytes(64, true, false), 4 * (64 * 40 + 32 * 72) * 2);
        assert_eq!(smem_bytes(128, false, false), 4 * (32 * 136 * 2) * 2);
        assert_eq!(smem_bytes(64, false, false), 4 * (32 * 72 * 2) * 2);
        assert_eq!(smem_bytes(128, true, true), 4 * (128 * 40 * 2) * 2);
    }
}
