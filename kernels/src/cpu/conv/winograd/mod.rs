//! Winograd F(2×2, 3×3) for 3×3 stride-1 2D convolutions (also 3D tensors with a `1×3×3`
//! kernel): 16 GEMMs of `tiles × cin × cout` replace the 9 taps' `4·tiles × cin × cout`, a
//! 2.25× cut in multiply-adds, for transforms that are a few additions per value.
//!
//! Tiles are 4×4 windows of the zero-padded input at stride 2, each producing a 2×2 output
//! block. Work is split into blocks of tile rows, processed in cache, each padding its own
//! input rows into a small buffer (no padded copy of the whole tensor):
//! * forward: input transform `V = Bᵀ d B`, 16 GEMMs `M_ξ = V_ξ · U_ξ` (`U = G g Gᵀ`), output
//!   transform `Y = Aᵀ M A`;
//! * backward-data: the forward applied to `dy` with the flipped, transposed kernel;
//! * backward-weight: `y` is bilinear in `(U, V)`, so `dU_ξ = Σ_tiles V_ξᵀ · Z_ξ` with the
//!   transformed output gradient `Z = A dY Aᵀ` (16 GEMMs per block, accumulated per thread),
//!   and `dw = Gᵀ dU G`.

mod simd;
mod transforms;

pub(super) use transforms::{accumulate_weight_grad, transform_weight};

use super::pack::fill_row;
use super::raw::{gemm, SharedOut, View};
use super::workspace::{group_count, group_range, TaskBuffers, ThreadBuffers, Workspace};
use super::ConvGeometry;
use crate::Real;
use gemm::Parallelism;
use rayon::prelude::*;

/// Tiles per block: the block's `V` and `M` (16 × tiles × channels each) should stay in L2.
const BLOCK_TILES: usize = 128;
/// Extra elements between the 16 planes of a block's `V` and `M`: plane sizes are often
/// multiples of 4 KiB, and 16 streams at such a pitch all land in the same L1 set.
const PLANE_SKEW: usize = 16;

/// Distance between the ξ planes of a block buffer of `nt` tiles × `c` channels.
fn plane_pitch(nt: usize, c: usize) -> usize {
    nt * c + PLANE_SKEW
}

/// The forward (and backward-weight) of `g` can run as F(2×2, 3×3).
pub(super) fn applicable(g: &ConvGeometry) -> bool {
    g.kernel == [1, 3, 3] && g.stride == [1, 1, 1] && g.pad_lo[0] == 0 && g.pad_hi[0] == 0
}

/// The backward-data of `g` can run as F(2×2, 3×3): the forward on `dy` padded by
/// `2 - pad` on each side, which needs `pad ≤ 2`.
pub(super) fn applicable_backward_data(g: &ConvGeometry) -> bool {
    applicable(g) && g.pad_lo.iter().chain(&g.pad_hi).all(|&p| p <= 2)
}

/// The forward convolution that computes `g`'s backward-data (input `dy`, output `dx`).
pub(super) fn backward_data_geometry(g: &ConvGeometry) -> ConvGeometry {
    let out = g.out_spatial();
    ConvGeometry {
        batch: g.batch,
        in_spatial: out,
        cin: g.cout,
        cout: g.cin,
        kernel: [1, 3, 3],
        stride: [1, 1, 1],
        pad_lo: [0, 2 - g.pad_lo[1], 2 - g.pad_lo[2]],
        pad_hi: [0, 2 - g.pad_hi[1], 2 - g.pad_hi[2]],
    }
}

/// The tiles of a geometry and their split into blocks of whole tile rows.
struct Tiling {
    /// Input extent `[h, w]` of one image (an image is one `(n, z)` plane).
    input: [usize; 2],
    /// Zero padding before the data, `[h, w]`.
    lo: [usize; 2],
    out: [usize; 2],
    /// Pixels per padded input row: the tiles' width (`2·tiles_x + 2`).
    pitch: usize,
    tiles: [usize; 2],
    rows_per_block: usize,
    /// `(image, first tile row)` of every block.
    blocks: Vec<(usize, usize)>,
}

/// One block: its image, tile extent and output rows.
struct Block {
    image: usize,
    first_tile_row: usize,
    tiles: [usize; 2],
    out_rows: [usize; 2],
}

impl Tiling {
    fn new(g: &ConvGeometry) -> Self {
        let o = g.out_spatial();
        let tiles = [o[1].div_ceil(2), o[2].div_ceil(2)];
        let rows_per_block = (BLOCK_TILES / tiles[1]).max(1);
        let images = g.batch * g.in_spatial[0];
        let blocks = (0..images)
            .flat_map(|img| {
                (0..tiles[0])
                    .step_by(rows_per_block)
                    .map(move |ty| (img, ty))
            })
            .collect();
        Tiling {
            input: [g.in_spatial[1], g.in_spatial[2]],
            lo: [g.pad_lo[1], g.pad_lo[2]],
            out: [o[1], o[2]],
            pitch: 2 * tiles[1] + 2,
            tiles,
            rows_per_block,
            blocks,
        }
    }

    fn block(&self, (image, ty0): (usize, usize)) -> Block {
        let ty1 = (ty0 + self.rows_per_block).min(self.tiles[0]);
        Block {
            image,
            first_tile_row: ty0,
            tiles: [ty1 - ty0, self.tiles[1]],
            out_rows: [2 * ty0, (2 * ty1).min(self.out[0])],
        }
    }

    /// Element range of a block's output rows in a `[images, out_h, out_w, c]` tensor.
    fn out_range(&self, b: &Block, c: usize) -> (usize, usize) {
        let row = self.out[1] * c;
        let start = (b.image * self.out[0] + b.out_rows[0]) * row;
        (start, (b.out_rows[1] - b.out_rows[0]) * row)
    }

    /// The zero-padded input rows the block's tiles read (`2·rows + 2` rows of `pitch`
    /// pixels), from `x` (`[images, h, w, c]`) into `buf`.
    fn pad_block<T: Real>(&self, x: &[T], b: &Block, c: usize, buf: &mut Vec<T>) {
        let rows = 2 * b.tiles[0] + 2;
        let row_len = self.input[1] * c;
        buf.resize(rows * self.pitch * c, T::zero());
        for (r, dst) in buf.chunks_exact_mut(self.pitch * c).enumerate() {
            let src = (2 * b.first_tile_row + r)
                .checked_sub(self.lo[0])
                .filter(|&y| y < self.input[0])
                .map(|y| {
                    let from = (b.image * self.input[0] + y) * row_len;
                    &x[from..from + row_len]
                });
            fill_row(dst, src, self.lo[1], c);
        }
    }
}

/// Where the forward finds its 16 transformed weight planes.
#[derive(Clone, Copy)]
pub(super) enum Planes<'a, T> {
    /// [`transform_weight`] of the forward's own weight: `u[ξ][cin][cout]`.
    Direct(&'a [T]),
    /// [`transform_weight`] of the convolution whose backward-data this forward computes (so
    /// `u[ξ][cout][cin]` in this forward's terms). The backward-data's weight is that one
    /// flipped in both axes with the channels swapped, and `G` maps a flipped kernel to its
    /// rows in the order `3, 1, 2, 0` (`G·J = P·G`), so its transform is `U` with `ξ = (i, j)`
    /// read at `(P i, P j)` and each plane transposed: no second transform is needed.
    Adjoint(&'a [T]),
}

/// `P`: where row `i` of `G·flip(g)` sits in `G·g`.
const FLIPPED_ROW: [usize; 4] = [3, 1, 2, 0];

impl<T> Planes<'_, T> {
    /// Plane `xi` as a `cin × cout` GEMM operand of a forward with those channel counts.
    fn plane(&self, xi: usize, cin: usize, cout: usize) -> View<*const T> {
        match *self {
            Planes::Direct(u) => View {
                ptr: u[xi * cin * cout..].as_ptr(),
                rs: cout,
                cs: 1,
            },
            Planes::Adjoint(u) => {
                let src = FLIPPED_ROW[xi / 4] * 4 + FLIPPED_ROW[xi % 4];
                View {
                    ptr: u[src * cin * cout..].as_ptr(),
                    rs: 1,
                    cs: cin,
                }
            }
        }
    }

    fn len(&self) -> usize {
        match *self {
            Planes::Direct(u) | Planes::Adjoint(u) => u.len(),
        }
    }
}

/// Forward of `g` (see [`applicable`]) with the transformed weight `u` (see
/// [`transform_weight`] and [`Planes`]): `y = conv(x, w) + bias`.
pub(super) fn forward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    u: Planes<'_, T>,
    bias: Option<&[T]>,
    y: &mut [T],
    threads: &ThreadBuffers<T>,
) {
    let tiling = Tiling::new(g);
    let (cin, cout) = (g.cin, g.cout);
    assert_eq!(
        u.len(),
        16 * cin * cout,
        "winograd: transformed weight size"
    );
    let y_out = SharedOut::new(y);
    tiling.blocks.par_iter().for_each(|&id| {
        threads.with(|TaskBuffers { a: p, b: v, c: m }| {
            let b = tiling.block(id);
            tiling.pad_block(x, &b, cin, p);
            let nt = b.tiles[0] * b.tiles[1];
            let (v_pitch, m_pitch) = (plane_pitch(nt, cin), plane_pitch(nt, cout));
            v.resize(16 * v_pitch, T::zero());
            m.resize(16 * m_pitch, T::zero());
            simd::input_block(p, 0, tiling.pitch, b.tiles, cin, v);
            for xi in 0..16 {
                // SAFETY: the block's own buffers hold 16 planes of nt × channels at their
                // pitch; `u` holds 16 planes of cin × cout (asserted above).
                unsafe {
                    gemm(
                        nt,
                        cout,
                        cin,
                        View {
                            ptr: m.as_mut_ptr().add(xi * m_pitch),
                            rs: cout,
                            cs: 1,
                        },
                        false,
                        View {
                            ptr: v.as_ptr().add(xi * v_pitch),
                            rs: cin,
                            cs: 1,
                        },
                        u.plane(xi, cin, cout),
                        Parallelism::None,
                    );
                }
            }
            let (start, len) = tiling.out_range(&b, cout);
            // SAFETY: blocks own disjoint output rows.
            let dst = unsafe { y_out.range(start, len) };
            let extent = [b.out_rows[1] - b.out_rows[0], tiling.out[1]];
            simd::output_block(m, b.tiles, cout, bias, dst, extent);
        })
    });
}

/// Backward-weight of `g` (see [`applicable`]): `dw += ∂⟨y, dy⟩/∂w`. The blocks are cut into one
/// contiguous group per thread, each adding its Winograd-domain gradient into its own partial
/// `dU`; the partials are summed in order (deterministic) and transformed back once.
pub(super) fn backward_weight<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    work: &mut Workspace<T>,
) {
    let tiling = Tiling::new(g);
    let (cin, cout) = (g.cin, g.cout);
    let groups = group_count(tiling.blocks.len());
    work.partials.reset(16 * cin * cout, groups);
    let Workspace {
        threads, partials, ..
    } = &*work;
    (0..groups).into_par_iter().for_each(|group| {
        let mine = &tiling.blocks[group_range(tiling.blocks.len(), groups, group)];
        threads.with(|TaskBuffers { a: p, b: v, c: z }| {
            for &id in mine {
                let b = tiling.block(id);
                let nt = b.tiles[0] * b.tiles[1];
                let (v_pitch, z_pitch) = (plane_pitch(nt, cin), plane_pitch(nt, cout));
                v.resize(16 * v_pitch, T::zero());
                z.resize(16 * z_pitch, T::zero());
                tiling.pad_block(x, &b, cin, p);
                simd::input_block(p, 0, tiling.pitch, b.tiles, cin, v);
                let (start, len) = tiling.out_range(&b, cout);
                let extent = [b.out_rows[1] - b.out_rows[0], tiling.out[1]];
                simd::grad_output_block(&dy[start..start + len], extent, b.tiles, cout, z);
                partials.with(group, |du| {
                    for xi in 0..16 {
                        // SAFETY: as in the forward; `du` holds 16 blocks of cin × cout.
                        unsafe {
                            gemm(
                                cin,
                                cout,
                                nt,
                                View {
                                    ptr: du.as_mut_ptr().add(xi * cin * cout),
                                    rs: cout,
                                    cs: 1,
                                },
                                true,
                                View {
                                    ptr: v.as_ptr().add(xi * v_pitch),
                                    rs: 1,
                                    cs: cin,
                                },
                                View {
                                    ptr: z.as_ptr().add(xi * z_pitch),
                                    rs: cout,
                                    cs: 1,
                                },
                                Parallelism::None,
                            );
                        }
                    }
                })
            }
        })
    });
    // The total goes through the (linear) inverse transform once, so sum it first.
    let du = &mut work.total;
    du.clear();
    du.resize(16 * cin * cout, T::zero());
    work.partials.add_total_to(du);
    accumulate_weight_grad(du, cin, cout, dw);
}
