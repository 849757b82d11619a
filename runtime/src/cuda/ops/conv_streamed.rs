//! The launchers of the streamed convolution kernels, one family per operand type: the BF16
//! kernels of `conv_bf16.cu` (operands rounded to bf16 buffers first, [`super::conv_bf16`]) and
//! the TF32 ones of `conv_tf32.cu` (the f32 operands in place, [`super::conv_tf32`]). They share
//! the problems, the block tiles and the launch shapes; a [`Family`] names the entry points and
//! sizes the shared memory.

use super::conv::ConvGeom;
use super::conv_plan::{streamed_forward_tile, tile, BlockTile, WgradPlan};
use super::{i32_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::CudaResult;
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::conv::ConvGeometry;

const KERNEL: &str = "cuda conv (streamed)";

/// One family of streamed convolution kernels.
#[derive(Clone, Copy, Debug)]
pub(super) struct Family {
    /// The entry points are `conv_{fwd,dgrad,wgrad}_{infix}_{tile}`.
    pub infix: &'static str,
    /// Dynamic shared memory of one block on a tile, from whether A and B are k-major.
    pub smem_bytes: fn(&BlockTile, bool, bool) -> u32,
    /// Whether the forward honours `MEDVAE_CONV_TILE` (only the BF16 family has the candidate
    /// tiles; the others run 128x128 or 64x64).
    pub tile_override: bool,
}

/// `y = conv(x, w) + bias + beta * y` from the family's operands `xh`, `wh` (the launcher
/// `super::conv::conv_forward` has checked the buffers and the geometry).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    fam: Family,
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
    let t = if fam.tile_override {
        streamed_forward_tile(dev, m, g.cout)?
    } else {
        tile(dev, m, g.cout)
    };
    let grid = (m.div_ceil(t.bm) as u32, g.cout.div_ceil(t.bn) as u32, 1);
    Args::new()
        .push(cg)
        .buf(xh)
        .buf(wh)
        .opt(bias)
        .buf(y)
        .push(beta)
        .launch(
            dev,
            &format!("conv_fwd_{}_{}", fam.infix, t.name),
            cfg(grid, (t.threads, 1, 1), (fam.smem_bytes)(&t, true, false)),
        )
}

/// `dx = conv^T(dy, w) + beta * dx` from the family's operands `dyh`, `wh`, by the
/// data-gradient problem (for strided convolutions; stride 1 goes through [`forward`] with
/// flipped weights).
pub(super) fn backward_data(
    fam: Family,
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    dyh: &DeviceBuffer,
    wh: &DeviceBuffer,
    dx: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    let m = g.input_len() / g.cin;
    // The strided data-gradient kernels exist in the two default tiles only.
    let t = tile(dev, m, g.cin);
    let grid = (m.div_ceil(t.bm) as u32, g.cin.div_ceil(t.bn) as u32, 1);
    Args::new()
        .push(cg)
        .buf(dyh)
        .buf(wh)
        .buf(dx)
        .push(beta)
        .launch(
            dev,
            &format!("conv_dgrad_{}_{}", fam.infix, t.name),
            cfg(grid, (t.threads, 1, 1), (fam.smem_bytes)(&t, true, true)),
        )
}

/// `dw += x^T dy` from the family's operands `xh`, `dyh`, with the block tile and the split of
/// the pixel reduction that `super::conv` planned.
pub(super) fn backward_weight(
    fam: Family,
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
            &format!("conv_wgrad_{}_{}", fam.infix, plan.tile.name),
            cfg(
                grid,
                (plan.tile.threads, 1, 1),
                (fam.smem_bytes)(&plan.tile, false, false),
            ),
        )
}
