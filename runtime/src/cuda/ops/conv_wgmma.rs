//! Convolutions on Hopper's warpgroup MMA (`kernels/cuda/conv_wgmma.cu`): the forward (and with
//! it the stride-1 data gradient) and the weight gradient, bf16 operands read by
//! `wgmma.mma_async` straight from shared memory, where the streamed kernels of
//! [`super::conv_bf16`] (mma.sync) must first load every fragment into registers.
//!
//! **The default on compute capability 9.0** (H100, H200) since its first run on a card (H200,
//! 2026-11-28: parity against the CPU within 2.4e-3; forward 31-51 % of the card's measured BF16
//! rate against 26-36 % for the mma.sync kernels; BF16 stage-1 step 0.152 s against 0.169 s), in
//! the `overlap` form (one group of MMAs left in flight while the next copies are issued; the
//! weight gradient runs its plain form). `MEDVAE_CONV_WGMMA=off` (the streamed mma.sync
//! kernels) or `=on` (each k-tile's MMAs retired before the next), or [`set_mode`], choose
//! otherwise; `=overlap-all` (the weight gradient's overlap form too) and `=s3` (3-stage rings,
//! two blocks per SM) are candidates **unverified on a GPU**, for the next card's sweep.

use super::conv::ConvGeom;
use super::conv_plan::{tile, wgmma_wgrad_plan, BlockTile, BIG};
use super::{conv_bf16, grid_1d, i32_of, Args, EnvChoice};
use crate::cuda::device::cfg;
use crate::cuda::error::CudaResult;
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::conv::ConvGeometry;

const KERNEL: &str = "cuda conv (wgmma)";

/// Block tile, threads, k-tile and pipeline depth of `conv_wgmma.cu` (its MV_WG_* constants):
/// 128x128, two warpgroups, 64-deep k-tiles, 4 stages.
pub(super) const TILE: BlockTile = BlockTile {
    name: "wgmma",
    bm: 128,
    bn: 128,
    threads: 256,
    bk: 64,
    stages: 4,
};

/// Whether and how the wgmma forward runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgmmaMode {
    /// The streamed mma.sync kernels (the default on devices other than compute capability 9.0).
    Off,
    /// `conv_fwd_bf16w_128x128`: each k-tile's MMAs retired before the next k-tile.
    On,
    /// `conv_fwd_bf16w_128x128o`: one group of MMAs in flight while the next copies are issued
    /// (the default).
    Overlap,
    /// The overlap form of the forward and of the weight gradient (`…_128x128o`). Unverified.
    OverlapAll,
    /// The 3-stage forms (`…_128x128s3`, forward and weight gradient), two blocks per SM.
    /// Unverified.
    TwoBlocks,
}

static MODE: EnvChoice = EnvChoice::new("MEDVAE_CONV_WGMMA");
const MODES: [WgmmaMode; 5] = [
    WgmmaMode::Off,
    WgmmaMode::On,
    WgmmaMode::Overlap,
    WgmmaMode::OverlapAll,
    WgmmaMode::TwoBlocks,
];

/// The mode: [`set_mode`]'s, else `MEDVAE_CONV_WGMMA` (`off`, `on`, `overlap-all`, `s3`; unset or
/// anything else is `overlap`, the default).
pub fn mode() -> WgmmaMode {
    let i = MODE.get(|v| {
        Ok::<u8, std::convert::Infallible>(match v {
            Some("off") => 0,
            Some("on") => 1,
            Some("overlap-all") => 3,
            Some("s3") => 4,
            _ => 2,
        })
    });
    MODES[i.map_or(2, |i| (i as usize).min(MODES.len() - 1))]
}

/// The kernels of a mode: forward and weight-gradient entry points, and their ring depth.
struct Form {
    forward: &'static str,
    wgrad: &'static str,
    stages: usize,
}

/// The current mode's kernels, read once per launch (so that entry and shared memory agree).
fn form() -> Form {
    let (forward, wgrad, stages) = match mode() {
        WgmmaMode::Off | WgmmaMode::On => (
            "conv_fwd_bf16w_128x128",
            "conv_wgrad_bf16w_128x128",
            TILE.stages,
        ),
        WgmmaMode::Overlap => (
            "conv_fwd_bf16w_128x128o",
            "conv_wgrad_bf16w_128x128",
            TILE.stages,
        ),
        WgmmaMode::OverlapAll => (
            "conv_fwd_bf16w_128x128o",
            "conv_wgrad_bf16w_128x128o",
            TILE.stages,
        ),
        WgmmaMode::TwoBlocks => ("conv_fwd_bf16w_128x128s3", "conv_wgrad_bf16w_128x128s3", 3),
    };
    Form {
        forward,
        wgrad,
        stages,
    }
}

/// Run the BF16 convolutions in mode `m` from now on.
pub fn set_mode(m: WgmmaMode) {
    MODE.set(MODES.iter().position(|&x| x == m).unwrap_or(0) as u8);
}

/// Dynamic shared memory of a block: stages x (A + B tile) bf16, plus 1024 bytes so that the
/// kernel can start its ring on a 1024-byte boundary (the 128-byte swizzle's atom).
fn smem_bytes(stages: usize) -> u32 {
    (stages * (TILE.bm + TILE.bn) * TILE.bk * 2 + 1024) as u32
}

/// Switched on, a compute capability 9.0 device, and channel counts the streamed kernels take:
/// what both wgmma problems need.
fn available(dev: &CudaDevice, g: &ConvGeometry) -> bool {
    let arch = dev.arch();
    mode() != WgmmaMode::Off && (arch.major, arch.minor) == (9, 0) && conv_bf16::applies(g)
}

/// The wgmma forward takes `g` on `dev`: [`available`], and a problem big enough for the
/// 128x128 default tile (smaller ones keep the 64x64 streamed kernels, which fill the device
/// better).
pub(super) fn applies(dev: &CudaDevice, g: &ConvGeometry) -> bool {
    available(dev, g) && tile(dev, g.output_len() / g.cout, g.cout) == BIG
}

/// The wgmma weight gradient takes `g` on `dev`: [`available`], and more than 64 output
/// channels (as the streamed 128x128 default).
pub(super) fn applies_wgrad(dev: &CudaDevice, g: &ConvGeometry) -> bool {
    available(dev, g) && g.cout > 64
}

/// `dw += x^T dy` from bf16 `xh` and `dyh` (the caller has checked the buffers and
/// [`applies_wgrad`]); the pixel reduction split across gridDim.z as `conv_plan` plans it.
pub(super) fn backward_weight(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    xh: &DeviceBuffer,
    dyh: &DeviceBuffer,
    dw: &DeviceBuffer,
) -> CudaResult<()> {
    let plan = wgmma_wgrad_plan(dev, g, TILE)?;
    let form = form();
    Args::new()
        .push(cg)
        .buf(xh)
        .buf(dyh)
        .buf(dw)
        .push(i32_of(KERNEL, "tiles per split", plan.per_split)?)
        .launch(
            dev,
            form.wgrad,
            cfg(
                (plan.grid.0, plan.grid.1, plan.splits as u32),
                (TILE.threads, 1, 1),
                smem_bytes(form.stages),
            ),
        )
}

/// `y = conv(x, w) + bias + beta * y` from bf16 `xh` and the f32 weights `w` (`[taps, Cin,
/// Cout]`), which are rounded and transposed to the kernel's `[Cout][taps * Cin]` here. The
/// caller has checked the buffers and [`applies`].
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    dev: &CudaDevice,
    g: &ConvGeometry,
    cg: ConvGeom,
    xh: &DeviceBuffer,
    w: &DeviceBuffer,
    bias: Option<&DeviceBuffer>,
    y: &DeviceBuffer,
    beta: f32,
) -> CudaResult<()> {
    let k = g.weight_len() / g.cout;
    let wt = dev.alloc((2 * g.weight_len()).div_ceil(16) * 16)?;
    Args::new()
        .buf(w)
        .buf(&wt)
        .push(i32_of(KERNEL, "taps*cin", k)?)
        .push(i32_of(KERNEL, "cout", g.cout)?)
        .launch(dev, "conv_weight_nk_bf16", grid_1d(dev, g.weight_len()))?;
    let m = g.output_len() / g.cout;
    let form = form();
    let grid = (
        m.div_ceil(TILE.bm) as u32,
        g.cout.div_ceil(TILE.bn) as u32,
        1,
    );
    Args::new()
        .push(cg)
        .buf(xh)
        .buf(&wt)
        .opt(bias)
        .buf(y)
        .push(beta)
        .launch(
            dev,
            form.forward,
            cfg(grid, (TILE.threads, 1, 1), smem_bytes(form.stages)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for m in MODES {
            set_mode(m);
            assert_eq!(mode(), m);
        }
        set_mode(WgmmaMode::Overlap);
        assert_eq!(form().forward, "conv_fwd_bf16w_128x128o");
        assert_eq!(form().wgrad, "conv_wgrad_bf16w_128x128");
    }

    /// The launcher's figure is the kernel's: 4 stages of two 128 x 64 bf16 tiles, plus the
    /// alignment slack, within the H100's 227 KB opt-in limit.
    #[test]
    fn shared_memory_matches_the_kernel_layout() {
        assert_eq!(smem_bytes(4), 4 * (128 * 64 + 128 * 64) * 2 + 1024);
        assert!(smem_bytes(4) <= 227 * 1024);
        // Two 3-stage blocks, each with the 1 KB the driver reserves, fit Hopper's 228 KB a SM.
        assert!(2 * (smem_bytes(3) + 1024) <= 228 * 1024);
    }
}
