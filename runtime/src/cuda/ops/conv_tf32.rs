//! The streamed TF32 convolution kernels (`kernels/cuda/conv_tf32.cu`): the BF16 kernels'
//! cp.async pipeline on the f32 operands themselves, rounded to TF32 as fragments leave shared
//! memory, so there is no conversion pass and no extra buffer. Used by [`super::conv`] for
//! `ConvPrecision::Tf32` where every channel count is a multiple of 4 (a run of four f32 must
//! not straddle a tap) and the streamed iterators fit, once switched on: **off by default until
//! measured on a card** (`MEDVAE_CONV_TF32=streamed`, or [`set_streamed_tf32`]); the staged
//! TF32 kernels of `conv_igemm.cu` serve otherwise. The same switch picks `gemm_tf32.cu` for
//! the TF32 GEMMs (`super::gemm`). Both round to nearest (ties away), so they
//! differ only in f32 summation order.

use super::conv_plan::{BlockTile, BIG, SMALL};
use super::conv_streamed::Family;
use super::{conv_bf16, KernelSwitch};
use medvae_kernels::cpu::conv::ConvGeometry;

/// The k-tile (f32 elements) and pipeline depth of `conv_tf32.cu` (`MV_TF32_BK`,
/// `MV_TF32_STAGES`).
pub(super) const BK: usize = 32;
const STAGES: usize = 3;
/// Row padding of a k-major and of a row-major shared tile (`MV_PAD32_K`, `MV_PAD32_R`).
const PAD_KMAJOR: usize = 4;
const PAD_ROWMAJOR: usize = 8;

static STREAMED: KernelSwitch = KernelSwitch::new("MEDVAE_CONV_TF32", "staged", "streamed", false);

/// Whether TF32 convolutions use the streamed kernels where they apply. Off by default (never
/// run on a card yet); `MEDVAE_CONV_TF32=streamed` in the environment, or [`set_streamed_tf32`],
/// turns them on.
pub fn streamed_tf32() -> bool {
    STREAMED.on()
}

/// Choose the streamed (true) or staged (false) TF32 convolution kernels from now on.
pub fn set_streamed_tf32(on: bool) {
    STREAMED.set(on);
}

/// The streamed TF32 kernels take `g` (channel counts multiples of 4, iterators that fit) and
/// are switched on.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    streamed_tf32()
        && g.cin.is_multiple_of(4)
        && g.cout.is_multiple_of(4)
        && conv_bf16::iterators_fit(g)
}

/// Dynamic shared memory of one block on tile `t` (128x128 or 64x64): STAGES x (A tile + B
/// tile) f32, each `rows x (BK + 4)` when k-major or `BK x (rows + 8)` when row-major.
pub(super) fn smem_bytes(t: &BlockTile, a_kmajor: bool, b_kmajor: bool) -> u32 {
    let part = |rows: usize, kmajor: bool| {
        if kmajor {
            rows * (BK + PAD_KMAJOR)
        } else {
            BK * (rows + PAD_ROWMAJOR)
        }
    };
    (STAGES * (part(t.bm, a_kmajor) + part(t.bn, b_kmajor)) * 4) as u32
}

/// [`smem_bytes`] of the square tile of edge `edge` (128 or 64), as `gemm_tf32.cu` uses.
pub(super) fn square_smem_bytes(edge: usize, a_kmajor: bool, b_kmajor: bool) -> u32 {
    let t = if edge == BIG.bm { BIG } else { SMALL };
    smem_bytes(&t, a_kmajor, b_kmajor)
}

/// The streamed TF32 kernels as a [`Family`] of [`super::conv_streamed`]: the f32 operands in
/// place, `conv_*_tf32s_*` entry points, 128x128 or 64x64 tiles.
pub(super) const TF32: Family = Family {
    infix: "tf32s",
    smem_bytes,
    tile_override: false,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher's shared-memory figures are the kernels' (`igemm_tf32_smem_bytes`, checked
    /// to the same numbers by the emulator test `test_conv_tf32.cpp`), and fit an A100's 163 KB.
    #[test]
    fn shared_memory_matches_the_kernels() {
        assert_eq!(smem_bytes(&BIG, true, false), 107_520);
        assert_eq!(smem_bytes(&BIG, true, true), 110_592);
        assert_eq!(smem_bytes(&BIG, false, false), 104_448);
        assert_eq!(smem_bytes(&SMALL, true, false), 55_296);
        assert!(smem_bytes(&BIG, true, true) <= 163 * 1024);
    }

    /// Channel counts that are not multiples of 4 (the model's 1- and 3-channel convolutions)
    /// stay on the staged kernels, as does everything while the switch is off.
    #[test]
    fn applies_to_multiples_of_four_when_switched_on() {
        let g = ConvGeometry::conv2d(1, [16, 16], 12, 20, 3, 1, 1);
        let thin = ConvGeometry::conv2d(1, [16, 16], 3, 128, 3, 1, 1);
        set_streamed_tf32(false);
        assert!(!applies(&g));
        set_streamed_tf32(true);
        assert!(applies(&g));
        assert!(!applies(&thin));
        set_streamed_tf32(false);
    }
}
