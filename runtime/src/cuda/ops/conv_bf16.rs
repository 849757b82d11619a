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

use super::conv_plan::{BlockTile, BIG, SMALL};
use super::conv_streamed::Family;
use super::{grid_1d, Args, KernelSwitch};
use crate::cuda::error::CudaResult;
use crate::cuda::{CudaDevice, DeviceBuffer};
use medvae_kernels::cpu::conv::ConvGeometry;

/// The default k-tile of `medvae_igemm_bf16.cuh` / `conv_bf16.cu` (the GEMMs' and the default
/// tiles'), and its rows' padding.
pub(super) const BK: usize = 32;
const PAD: usize = 8;

static STREAMED: KernelSwitch = KernelSwitch::new("MEDVAE_CONV_BF16", "staged", "streamed", true);

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

/// The streamed kernels take `g` (all channel counts multiples of 8, and iterators that fit) and
/// are switched on.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    streamed() && g.cin.is_multiple_of(8) && g.cout.is_multiple_of(8) && iterators_fit(g)
}

/// Whether the streamed (and wgmma) iterators of `medvae_conv_streamed.cuh` can walk `g`: they
/// keep a 64-bit mask of the taps inside each receptive field, a tap's offset from a pixel
/// (at most a few planes of the input or output) and weight offsets in 32-bit integers.
/// Anything larger goes to the staged kernels, which decode every coordinate.
pub(super) fn iterators_fit(g: &ConvGeometry) -> bool {
    const I32: usize = i32::MAX as usize;
    let taps: usize = g.kernel.iter().product();
    let out = g.out_spatial();
    let extent = |axis: usize| g.in_spatial[axis].max(out[axis]) + g.kernel[axis] + g.pad_lo[axis];
    let planes = g.kernel[0] + g.pad_lo[0] + 1;
    let tap_span = planes
        .checked_mul(extent(1))
        .and_then(|v| v.checked_mul(extent(2)))
        .and_then(|v| v.checked_mul(g.cin.max(g.cout)));
    let weights = taps.checked_mul(g.cin).and_then(|v| v.checked_mul(g.cout));
    taps <= 64 && tap_span.is_some_and(|v| v <= I32) && weights.is_some_and(|v| v <= I32)
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

/// Dynamic shared memory of one block of the streamed kernels (convolutions and `gemm_bf16.cu`)
/// on tile `t`: stages x (A tile + B tile) bf16, A `bm` rows and B `bn` rows by `bk`, each
/// stored k-major (`[rows][bk + PAD]`) or row-major (`[bk][rows + PAD]`).
pub(super) fn smem_bytes(t: &BlockTile, a_kmajor: bool, b_kmajor: bool) -> u32 {
    let part = |rows: usize, kmajor: bool| {
        if kmajor {
            rows * (t.bk + PAD)
        } else {
            t.bk * (rows + PAD)
        }
    };
    (t.stages * (part(t.bm, a_kmajor) + part(t.bn, b_kmajor)) * 2) as u32
}

/// [`smem_bytes`] of the square default tile of edge `edge` (64 or 128), as the GEMMs use.
pub(super) fn square_smem_bytes(edge: usize, a_kmajor: bool, b_kmajor: bool) -> u32 {
    let t = if edge == BIG.bm { BIG } else { SMALL };
    smem_bytes(&t, a_kmajor, b_kmajor)
}

/// The streamed BF16 kernels as a [`Family`] of [`super::conv_streamed`]: operands in bf16
/// buffers, `conv_*_bf16s_*` entry points, every tile of `STREAMED_TILES` for the forward.
pub(super) const BF16: Family = Family {
    infix: "bf16s",
    smem_bytes,
    tile_override: true,
};

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cuda::ops::conv_plan::STREAMED_TILES;

    /// The model's convolutions fit the streamed iterators; more than 64 taps, or a tap span
    /// past 32-bit offsets, goes to the staged kernels instead.
    #[test]
    fn iterators_fit_the_model_shapes_only() {
        let fits = |g: ConvGeometry| iterators_fit(&g);
        assert!(fits(ConvGeometry::conv2d(8, [256, 256], 128, 128, 3, 1, 1)));
        assert!(fits(ConvGeometry::conv2d(8, [256, 256], 64, 64, 4, 2, 1)));
        assert!(fits(ConvGeometry::conv3d(
            1,
            [64, 64, 64],
            128,
            128,
            3,
            1,
            1
        )));
        assert!(fits(ConvGeometry::conv3d(
            2,
            [256, 256, 256],
            64,
            64,
            3,
            1,
            1
        )));
        assert!(fits(ConvGeometry::conv3d(1, [16, 16, 16], 8, 8, 4, 1, 1))); // 64 taps
        assert!(!fits(ConvGeometry::conv2d(1, [64, 64], 8, 8, 9, 1, 4))); // 81 taps
        assert!(!fits(ConvGeometry::conv3d(1, [16, 16, 16], 8, 8, 5, 1, 2))); // 125 taps
                                                                              // A 3x3 over 32768² planes of 512 channels: a tap spans more than 2^31 elements.
        assert!(!fits(ConvGeometry::conv2d(
            1,
            [32768, 32768],
            512,
            512,
            3,
            1,
            1
        )));
    }

    /// The launcher's shared-memory figure must equal the kernels' (`igemm_bf16_smem_bytes`:
    /// 4 stages of a 128x40 A tile and a 32x136 B tile for the 128x128 forward, ...).
    #[test]
    fn shared_memory_matches_the_kernel_layout() {
        assert_eq!(
            square_smem_bytes(128, true, false),
            4 * (128 * 40 + 32 * 136) * 2
        );
        assert_eq!(
            square_smem_bytes(64, true, false),
            4 * (64 * 40 + 32 * 72) * 2
        );
        assert_eq!(square_smem_bytes(128, false, false), 4 * (32 * 136 * 2) * 2);
        assert_eq!(square_smem_bytes(64, false, false), 4 * (32 * 72 * 2) * 2);
        assert_eq!(square_smem_bytes(128, true, true), 4 * (128 * 40 * 2) * 2);
        let by_name = |name: &str| *STREAMED_TILES.iter().find(|t| t.name == name).unwrap();
        let wide = by_name("256x128");
        assert_eq!(
            smem_bytes(&wide, true, false),
            4 * (256 * 40 + 32 * 136) * 2
        );
        assert_eq!(
            smem_bytes(&wide, false, false),
            4 * (32 * 264 + 32 * 136) * 2
        );
        let deep = by_name("128x128k64");
        assert_eq!(
            smem_bytes(&deep, true, false),
            3 * (128 * 72 + 64 * 136) * 2
        );
        assert_eq!(smem_bytes(&deep, false, false), 3 * (64 * 136 * 2) * 2);
        // Every tile fits an A100's 163 KB opt-in limit (the H100's is 227 KB).
        for t in STREAMED_TILES {
            for (a, b) in [(true, false), (true, true), (false, false)] {
                assert!(smem_bytes(&t, a, b) <= 163 * 1024, "{t:?}");
            }
        }
    }
}
