//! How the tensor-core convolution GEMMs are cut into blocks: the block tile of a problem, and
//! the plan of a weight gradient (tile, and the split of its long pixel reduction across
//! gridDim.z), with the environment overrides used to tune them on a new card.

use super::conv::ConvPrecision;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::CudaDevice;
use medvae_kernels::cpu::conv::ConvGeometry;

const KERNEL: &str = "cuda conv";

/// Block tile: 128x128 (256 threads) when there are enough tiles to fill the device, else
/// 64x64 (128 threads).
pub(super) fn tile(dev: &CudaDevice, m: usize, n: usize) -> (usize, u32, &'static str) {
    tile_for(dev.sm_count() as usize, m, n)
}

/// [`tile`] for a device of `sm_count` multiprocessors.
fn tile_for(sm_count: usize, m: usize, n: usize) -> (usize, u32, &'static str) {
    let big_blocks = m.div_ceil(128) * n.div_ceil(128);
    if n > 64 && big_blocks >= 2 * sm_count {
        (128, 256, "128x128")
    } else {
        (64, 128, "64x64")
    }
}

/// Resident weight-gradient blocks per SM forced by `MEDVAE_WGRAD_BLOCKS_PER_SM` (1–64; for
/// tuning on a new card), else `None`.
fn wgrad_blocks_per_sm() -> Option<usize> {
    static PER_SM: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *PER_SM.get_or_init(|| {
        std::env::var("MEDVAE_WGRAD_BLOCKS_PER_SM")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| (1..=64).contains(&v))
    })
}

/// Weight-gradient block tile forced by `MEDVAE_WGRAD_TILE=128x128` or `64x64` (for tuning on
/// a new card), else `None`.
fn wgrad_tile() -> Option<(usize, u32, &'static str)> {
    static FORCED: std::sync::OnceLock<Option<(usize, u32, &'static str)>> =
        std::sync::OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var("MEDVAE_WGRAD_TILE").as_deref() {
        Ok("128x128") => Some((128, 256, "128x128")),
        Ok("64x64") => Some((64, 128, "64x64")),
        _ => None,
    })
}

/// Default blocks per SM of the staged weight-gradient kernels. Was 2 until measured on an
/// H200 (docs/BENCHMARKS.md).
const WGRAD_BLOCKS_PER_SM: usize = 32;
/// The same for the streamed kernels (H100 sweep of 4, 8 and 32, docs/BENCHMARKS.md).
const WGRAD_BLOCKS_PER_SM_STREAMED: usize = 8;

/// How a weight-gradient GEMM (taps·Cin × Cout over the pixels) is cut: the block tile, and
/// the pixel reduction split across gridDim.z (splits add into dw atomically).
pub(super) struct WgradPlan {
    pub(super) edge: usize,
    pub(super) threads: u32,
    pub(super) name: &'static str,
    pub(super) grid: (u32, u32),
    pub(super) splits: usize,
    pub(super) per_split: usize,
}

/// The plan for `g` on `dev` with the k-tile of `prec`'s kernels (the streamed ones when
/// `streamed`), honouring `MEDVAE_WGRAD_TILE` / `MEDVAE_WGRAD_BLOCKS_PER_SM`.
pub(super) fn wgrad_plan(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    streamed: bool,
) -> CudaResult<WgradPlan> {
    let forced = (wgrad_tile(), wgrad_blocks_per_sm());
    plan_weight_gradient(dev.sm_count() as usize, g, prec.bk(), streamed, forced)
}

/// The split keeps `blocks_per_sm` blocks per SM with at least 8 k-tiles (of `k_tile` pixels)
/// per split: the GEMMs are tall and thin (~10⁵–10⁶ pixels), and without splits a few dozen
/// blocks would run the whole reduction.
fn plan_weight_gradient(
    sm_count: usize,
    g: &ConvGeometry,
    k_tile: usize,
    streamed: bool,
    (forced_tile, forced_per_sm): (Option<(usize, u32, &'static str)>, Option<usize>),
) -> CudaResult<WgradPlan> {
    let m = g.weight_len() / g.cout;
    // Measured on an H100 (docs/BENCHMARKS.md): the streamed kernels are fastest with 128x128
    // tiles and 8 blocks per SM, the staged ones with the forward rule and 32.
    let (default_tile, default_per_sm) = if streamed && g.cout > 64 {
        ((128, 256, "128x128"), WGRAD_BLOCKS_PER_SM_STREAMED)
    } else if streamed {
        ((64, 128, "64x64"), WGRAD_BLOCKS_PER_SM_STREAMED)
    } else {
        (tile_for(sm_count, m, g.cout), WGRAD_BLOCKS_PER_SM)
    };
    let (edge, threads, name) = forced_tile.unwrap_or(default_tile);
    let (gm, gn) = (m.div_ceil(edge), g.cout.div_ceil(edge));
    let pixels = g.output_len() / g.cout;
    let kt = pixels.div_ceil(k_tile).max(1);
    let per_sm = forced_per_sm.unwrap_or(default_per_sm);
    let want = (per_sm * sm_count).div_ceil(gm * gn).max(1);
    let splits = want.min(kt.div_ceil(8)).max(1);
    let per_split = kt.div_ceil(splits);
    let splits = kt.div_ceil(per_split);
    if splits > 65535 {
        return Err(geometry(
            KERNEL,
            format!("{splits} weight-gradient splits exceed the grid limit"),
        ));
    }
    Ok(WgradPlan {
        edge,
        threads,
        name,
        grid: (gm as u32, gn as u32),
        splits,
        per_split,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every weight-gradient plan covers every k-tile of pixels exactly once (the splits tile
    /// the range, the last one possibly short), its grid covers the whole taps·Cin × Cout
    /// matrix, and a split gets at least 8 k-tiles where there are that many.
    #[test]
    fn weight_gradient_plans_cover_the_reduction() {
        let shapes = [
            ConvGeometry::conv2d(8, [256, 256], 128, 128, 3, 1, 1),
            ConvGeometry::conv2d(8, [256, 256], 1, 128, 3, 1, 1),
            ConvGeometry::conv2d(2, [7, 5], 16, 24, 4, 2, 1),
            ConvGeometry::conv2d(1, [1, 1], 8, 8, 1, 1, 0),
            ConvGeometry::conv3d(1, [64, 64, 64], 64, 64, 3, 1, 1),
            ConvGeometry::conv2d(64, [512, 512], 512, 3, 3, 1, 1),
        ];
        for g in &shapes {
            for (k_tile, streamed) in [(16, false), (32, false), (32, true)] {
                for sm_count in [1, 132] {
                    let p = plan_weight_gradient(sm_count, g, k_tile, streamed, (None, None))
                        .expect("plan");
                    let kt = (g.output_len() / g.cout).div_ceil(k_tile).max(1);
                    let what = format!("{g:?} k-tile {k_tile} streamed {streamed} SMs {sm_count}");
                    assert!(p.splits >= 1 && p.per_split >= 1, "{what}");
                    assert!(p.splits * p.per_split >= kt, "{what}: k-tiles left out");
                    assert!((p.splits - 1) * p.per_split < kt, "{what}: an empty split");
                    assert!(p.per_split >= kt.min(8), "{what}: splits too thin");
                    let m = g.weight_len() / g.cout;
                    assert!(p.grid.0 as usize * p.edge >= m, "{what}: rows left out");
                    assert!(
                        p.grid.1 as usize * p.edge >= g.cout,
                        "{what}: columns left out"
                    );
                    assert_eq!(p.threads as usize, 2 * p.edge, "{what}: tile and block");
                }
            }
        }
        // Forced settings are taken as given; an impossible grid is an error, not a panic.
        let g = &shapes[0];
        let p = plan_weight_gradient(132, g, 32, true, (Some((64, 128, "64x64")), Some(4)))
            .expect("plan");
        assert_eq!((p.edge, p.name), (64, "64x64"));
        let huge = plan_weight_gradient(1 << 26, g, 32, true, (None, Some(64)));
        assert!(huge.is_err() || huge.unwrap().splits <= 65535);
    }
}
