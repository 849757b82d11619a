//! How the tensor-core convolution GEMMs are cut into blocks: the block tile of a problem, and
//! the plan of a weight gradient (tile, and the split of its long pixel reduction across
//! gridDim.z), with the environment (or run-time) overrides used to tune them on a new card.

use super::conv::ConvPrecision;
use super::EnvChoice;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::CudaDevice;
use medvae_kernels::cpu::conv::ConvGeometry;

const KERNEL: &str = "cuda conv";

/// A block tile of the tensor-core convolution kernels: the suffix of its entry points, the
/// output rows (`bm`, pixels or taps·Cin) and columns (`bn`, channels) of one block, its
/// threads, and the k-tile and pipeline depth of the streamed BF16 kernels
/// (`medvae_igemm_bf16.cuh`; the staged kernels have only [`SMALL`] and [`BIG`], with the
/// k-tile of their precision, [`ConvPrecision::bk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTile {
    pub name: &'static str,
    pub bm: usize,
    pub bn: usize,
    pub threads: u32,
    pub bk: usize,
    pub stages: usize,
}

/// 64x64, 4 warps of 32x32.
pub(super) const SMALL: BlockTile = BlockTile {
    name: "64x64",
    bm: 64,
    bn: 64,
    threads: 128,
    bk: 32,
    stages: 4,
};
/// 128x128, 8 warps of 64x32.
pub(super) const BIG: BlockTile = BlockTile {
    name: "128x128",
    bm: 128,
    bn: 128,
    threads: 256,
    bk: 32,
    stages: 4,
};

/// Every tile of the streamed forward and weight-gradient kernels (`conv_bf16.cu`): the two
/// defaults, then candidates for tuning on a card (not yet measured on one, so no default
/// picks them): 8 warps of 64x64 on 256x128, 4 warps of 64x64 on 128x128, and 8 warps of
/// 64x32 with a 64-deep k-tile and 3 stages.
pub const STREAMED_TILES: [BlockTile; 5] = [
    BIG,
    SMALL,
    BlockTile {
        name: "256x128",
        bm: 256,
        bn: 128,
        threads: 256,
        bk: 32,
        stages: 4,
    },
    BlockTile {
        name: "128x128w4",
        bm: 128,
        bn: 128,
        threads: 128,
        bk: 32,
        stages: 4,
    },
    BlockTile {
        name: "128x128k64",
        bm: 128,
        bn: 128,
        threads: 256,
        bk: 64,
        stages: 3,
    },
];

/// Block tile: 128x128 (256 threads) when there are enough tiles to fill the device, else
/// 64x64 (128 threads).
pub(super) fn tile(dev: &CudaDevice, m: usize, n: usize) -> BlockTile {
    tile_for(dev.sm_count() as usize, m, n)
}

/// [`tile`] for a device of `sm_count` multiprocessors.
fn tile_for(sm_count: usize, m: usize, n: usize) -> BlockTile {
    let big_blocks = m.div_ceil(128) * n.div_ceil(128);
    if n > 64 && big_blocks >= 2 * sm_count {
        BIG
    } else {
        SMALL
    }
}

/// The tile of a streamed forward convolution (stride-1 data gradients included): [`tile`],
/// with `MEDVAE_CONV_TILE` (or [`set_forward_tile`]) in place of the 128x128 default. Small
/// problems keep 64x64, which the larger candidates would leave the device idle on.
pub fn streamed_forward_tile(dev: &CudaDevice, m: usize, n: usize) -> CudaResult<BlockTile> {
    let default = tile(dev, m, n);
    Ok(match FORWARD_TILE.get()? {
        Some(forced) if default == BIG => forced,
        _ => default,
    })
}

/// A streamed tile chosen by an environment variable or at run time, for sweeping a new card
/// (choice 0: no override, 1 + i: `STREAMED_TILES[i]`).
pub(super) struct TileOverride(EnvChoice);

impl TileOverride {
    const fn new(var: &'static str) -> Self {
        TileOverride(EnvChoice::new(var))
    }

    /// The override; an unknown tile name in the environment is an error naming the choices.
    fn get(&self) -> CudaResult<Option<BlockTile>> {
        let i = self.0.get(|name| self.index(name))?;
        Ok(i.checked_sub(1).map(|i| STREAMED_TILES[i as usize]))
    }

    fn set(&self, name: Option<&str>) -> CudaResult<()> {
        self.0.set(self.index(name)?);
        Ok(())
    }

    fn index(&self, name: Option<&str>) -> CudaResult<u8> {
        match name {
            None | Some("") => Ok(0),
            Some(name) => match STREAMED_TILES.iter().position(|t| t.name == name) {
                Some(i) => Ok(i as u8 + 1),
                None => {
                    let choices: Vec<&str> = STREAMED_TILES.iter().map(|t| t.name).collect();
                    Err(geometry(
                        KERNEL,
                        format!(
                            "{}={name}: not a block tile (one of {})",
                            self.0.var(),
                            choices.join(", ")
                        ),
                    ))
                }
            },
        }
    }
}

static FORWARD_TILE: TileOverride = TileOverride::new("MEDVAE_CONV_TILE");
static WGRAD_TILE: TileOverride = TileOverride::new("MEDVAE_WGRAD_TILE");

/// Run the big streamed forward convolutions on the tile named `name` (one of
/// [`STREAMED_TILES`]) from now on, or on the default with `None`; overrides
/// `MEDVAE_CONV_TILE`.
pub fn set_forward_tile(name: Option<&str>) -> CudaResult<()> {
    FORWARD_TILE.set(name)
}

/// Run the weight gradients on the tile named `name` from now on (the staged kernels honour
/// only 128x128 and 64x64), or on the default with `None`; overrides `MEDVAE_WGRAD_TILE`.
pub fn set_wgrad_tile(name: Option<&str>) -> CudaResult<()> {
    WGRAD_TILE.set(name)
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

/// Default blocks per SM of the staged weight-gradient kernels. Was 2 until measured on an
/// H200 (docs/BENCHMARKS.md).
const WGRAD_BLOCKS_PER_SM: usize = 32;
/// The same for the streamed kernels (H100 sweep of 4, 8 and 32, docs/BENCHMARKS.md).
const WGRAD_BLOCKS_PER_SM_STREAMED: usize = 8;

/// How a weight-gradient GEMM (taps·Cin × Cout over the pixels) is cut: the block tile, and
/// the pixel reduction split across gridDim.z (splits add into dw atomically).
pub(super) struct WgradPlan {
    pub(super) tile: BlockTile,
    pub(super) grid: (u32, u32),
    pub(super) splits: usize,
    pub(super) per_split: usize,
}

/// The plan for `g` on `dev` with `prec`'s kernels (the streamed ones when `streamed`),
/// honouring `MEDVAE_WGRAD_TILE` / `MEDVAE_WGRAD_BLOCKS_PER_SM`.
pub(super) fn wgrad_plan(
    dev: &CudaDevice,
    g: &ConvGeometry,
    prec: ConvPrecision,
    streamed: bool,
) -> CudaResult<WgradPlan> {
    let forced = (WGRAD_TILE.get()?, wgrad_blocks_per_sm());
    plan_weight_gradient(dev.sm_count() as usize, g, prec.bk(), streamed, forced)
}

/// The plan of the streamed TF32 weight gradient (`conv_tf32.cu`, which has only the
/// [`BIG`] and [`SMALL`] tiles, k-tile 32): the streamed kernels' rule, honouring
/// `MEDVAE_WGRAD_TILE` when it names one of those two and `MEDVAE_WGRAD_BLOCKS_PER_SM`.
pub(super) fn tf32_wgrad_plan(dev: &CudaDevice, g: &ConvGeometry) -> CudaResult<WgradPlan> {
    let tile = WGRAD_TILE.get()?.filter(|t| *t == BIG || *t == SMALL);
    let forced = (tile, wgrad_blocks_per_sm());
    plan_weight_gradient(dev.sm_count() as usize, g, BIG.bk, true, forced)
}

/// The plan of the wgmma weight gradient (`conv_wgmma.cu`'s tile, see
/// `conv_wgmma::TILE`), with the streamed kernels' blocks per SM (or
/// `MEDVAE_WGRAD_BLOCKS_PER_SM`).
pub(super) fn wgmma_wgrad_plan(
    dev: &CudaDevice,
    g: &ConvGeometry,
    tile: BlockTile,
) -> CudaResult<WgradPlan> {
    let forced = (Some(tile), wgrad_blocks_per_sm());
    plan_weight_gradient(dev.sm_count() as usize, g, tile.bk, true, forced)
}

/// The split keeps `blocks_per_sm` blocks per SM with at least 8 k-tiles (of the tile's
/// pixels; `staged_k_tile` for the staged kernels) per split: the GEMMs are tall and thin
/// (~10⁵–10⁶ pixels), and without splits a few dozen blocks would run the whole reduction.
fn plan_weight_gradient(
    sm_count: usize,
    g: &ConvGeometry,
    staged_k_tile: usize,
    streamed: bool,
    (forced_tile, forced_per_sm): (Option<BlockTile>, Option<usize>),
) -> CudaResult<WgradPlan> {
    let m = g.weight_len() / g.cout;
    // Measured on an H100 (docs/BENCHMARKS.md): the streamed kernels are fastest with 128x128
    // tiles and 8 blocks per SM, the staged ones with the forward rule and 32.
    let (default_tile, default_per_sm) = if streamed && g.cout > 64 {
        (BIG, WGRAD_BLOCKS_PER_SM_STREAMED)
    } else if streamed {
        (SMALL, WGRAD_BLOCKS_PER_SM_STREAMED)
    } else {
        (tile_for(sm_count, m, g.cout), WGRAD_BLOCKS_PER_SM)
    };
    let tile = match forced_tile {
        Some(t) if streamed || t == BIG || t == SMALL => t,
        _ => default_tile,
    };
    let k_tile = if streamed { tile.bk } else { staged_k_tile };
    let (gm, gn) = (m.div_ceil(tile.bm), g.cout.div_ceil(tile.bn));
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
        tile,
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
        let forced: Vec<Option<BlockTile>> = std::iter::once(None)
            .chain(STREAMED_TILES.iter().copied().map(Some))
            .collect();
        for g in &shapes {
            for (staged_k_tile, streamed) in [(16, false), (32, false), (0, true)] {
                for &tile in &forced {
                    for sm_count in [1, 132] {
                        let p = plan_weight_gradient(
                            sm_count,
                            g,
                            staged_k_tile,
                            streamed,
                            (tile, None),
                        )
                        .expect("plan");
                        let what = format!("{g:?} streamed {streamed} {tile:?} SMs {sm_count}");
                        let k_tile = if streamed { p.tile.bk } else { staged_k_tile };
                        let kt = (g.output_len() / g.cout).div_ceil(k_tile).max(1);
                        assert!(p.splits >= 1 && p.per_split >= 1, "{what}");
                        assert!(p.splits * p.per_split >= kt, "{what}: k-tiles left out");
                        assert!((p.splits - 1) * p.per_split < kt, "{what}: an empty split");
                        assert!(p.per_split >= kt.min(8), "{what}: splits too thin");
                        let m = g.weight_len() / g.cout;
                        assert!(p.grid.0 as usize * p.tile.bm >= m, "{what}: rows left out");
                        assert!(
                            p.grid.1 as usize * p.tile.bn >= g.cout,
                            "{what}: columns left out"
                        );
                        // The staged kernels exist in the two square tiles only.
                        assert!(streamed || p.tile == BIG || p.tile == SMALL, "{what}");
                        if let (true, Some(forced)) = (streamed, tile) {
                            assert_eq!(p.tile, forced, "{what}: override not taken");
                        }
                    }
                }
            }
        }
        // Forced settings are taken as given; an impossible grid is an error, not a panic.
        let g = &shapes[0];
        let p = plan_weight_gradient(132, g, 16, true, (Some(SMALL), Some(4))).expect("plan");
        assert_eq!(p.tile, SMALL);
        let huge = plan_weight_gradient(1 << 26, g, 16, true, (None, Some(64)));
        assert!(huge.is_err() || huge.unwrap().splits <= 65535);
    }

    /// Tile names round-trip through the override, and an unknown name is refused with the
    /// choices (not silently replaced by the default).
    #[test]
    fn tile_overrides_take_known_names_only() {
        let o = TileOverride::new("MEDVAE_TEST_TILE_NOT_SET");
        for t in STREAMED_TILES {
            o.set(Some(t.name)).expect("known tile");
            assert_eq!(o.get().expect("get"), Some(t));
        }
        o.set(None).expect("clear");
        assert_eq!(o.get().expect("get"), None);
        let err = o.set(Some("96x96")).expect_err("unknown tile").to_string();
        assert!(err.contains("96x96") && err.contains("128x128k64"), "{err}");
        assert_eq!(o.get().expect("unchanged"), None);
    }

    /// Names are unique, and each tile divides into whole warps of whole mma steps as the
    /// kernels require (`static_assert`s of `medvae_igemm_bf16.cuh`).
    #[test]
    fn streamed_tiles_are_consistent() {
        for (i, t) in STREAMED_TILES.iter().enumerate() {
            assert!(STREAMED_TILES[..i].iter().all(|u| u.name != t.name));
            assert!(
                t.threads % 32 == 0 && t.bk % 16 == 0 && t.stages >= 2,
                "{t:?}"
            );
            let runs_per_stage = (t.bm + t.bn) * t.bk / 8;
            assert_eq!(runs_per_stage % t.threads as usize, 0, "{t:?}");
        }
    }
}
