//! Winograd F(2×2, 3×3) for stride-1 convolutions whose kernel is 3×3 in height and width:
//! 2D `3×3`, and on volumes `kd×3×3` (the model's `3×3×3`): 16 GEMMs of `tiles × cin × cout`
//! per depth tap replace the 9 taps' `4·tiles × cin × cout`, a 2.25× cut in multiply-adds, for
//! transforms that are a few additions per value.
//!
//! A volume's convolution is a sum over the depth taps of 2D convolutions: output plane `z`
//! adds, for each depth tap `kd`, input plane `z + kd - pad` (those inside the volume) through
//! that tap's `3×3` slice of the weight. Tiles are 4×4 windows of the zero-padded input plane
//! at stride 2, each producing a 2×2 output block. Work is split into blocks of tile rows of one
//! output plane, processed in cache, each padding its own input rows into a small buffer (no
//! padded copy of the whole tensor):
//! * forward: per depth tap, input transform `V = Bᵀ d B` and 16 GEMMs accumulating
//!   `M_ξ += V_ξ · U_ξ` (`U = G g Gᵀ` of that tap's slice), then output transform `Y = Aᵀ M A`;
//! * backward-data: the forward applied to `dy` with the flipped, transposed kernel;
//! * backward-weight: `y` is bilinear in `(U, V)`, so `dU_ξ = Σ_tiles V_ξᵀ · Z_ξ` per depth tap
//!   with the transformed output gradient `Z = A dY Aᵀ` (16 GEMMs per block and tap,
//!   accumulated per thread), and `dw = Gᵀ dU G`.

mod simd;
mod tiling;
mod transforms;

use transforms::{accumulate_weight_grad, transform_weight};

use super::raw::{gemm, SharedOut, View};
use super::workspace::{group_count, group_range, TaskBuffers, ThreadBuffers, Workspace};
use super::ConvGeometry;
use crate::Real;
use gemm::Parallelism;
use rayon::prelude::*;
use tiling::Tiling;

/// Extra elements between the 16 planes of a block's `V` and `M`: plane sizes are often
/// multiples of 4 KiB, and 16 streams at such a pitch all land in the same L1 set.
const PLANE_SKEW: usize = 16;

/// Distance between the ξ planes of a block buffer of `nt` tiles × `c` channels.
fn plane_pitch(nt: usize, c: usize) -> usize {
    nt * c + PLANE_SKEW
}

/// The forward (and backward-weight) of `g` can run as F(2×2, 3×3): stride 1, a kernel 3×3 in
/// height and width (any depth, any padding).
pub(super) fn applicable(g: &ConvGeometry) -> bool {
    g.kernel[1] == 3 && g.kernel[2] == 3 && g.stride == [1, 1, 1]
}

/// The backward-data of `g` can run as F(2×2, 3×3): the forward on `dy` padded by
/// `kernel - 1 - pad` on each side, which needs `pad ≤ kernel - 1`.
pub(super) fn applicable_backward_data(g: &ConvGeometry) -> bool {
    applicable(g) && (0..3).all(|i| g.pad_lo[i] < g.kernel[i] && g.pad_hi[i] < g.kernel[i])
}

/// The forward convolution that computes `g`'s backward-data (input `dy`, output `dx`).
pub(super) fn backward_data_geometry(g: &ConvGeometry) -> ConvGeometry {
    let k = g.kernel;
    ConvGeometry {
        batch: g.batch,
        in_spatial: g.out_spatial(),
        cin: g.cout,
        cout: g.cin,
        kernel: k,
        stride: [1, 1, 1],
        pad_lo: std::array::from_fn(|i| k[i] - 1 - g.pad_lo[i]),
        pad_hi: std::array::from_fn(|i| k[i] - 1 - g.pad_hi[i]),
    }
}

/// Elements of the transformed weight of `g`: 16 planes of `cin × cout` per depth tap.
pub(super) fn transformed_len(g: &ConvGeometry) -> usize {
    16 * g.kernel[0] * g.cin * g.cout
}

/// [`transform_weight`] of every depth tap's `3×3` slice of `w` (`[kd, 3, 3, cin, cout]`) into
/// `u` (`[kd][ξ][cin][cout]`, [`transformed_len`] elements).
pub(super) fn transform_weights<T: Real>(
    w: &[T],
    depth_taps: usize,
    cin: usize,
    cout: usize,
    u: &mut [T],
) {
    let (slice, planes) = (9 * cin * cout, 16 * cin * cout);
    for (wk, uk) in w
        .chunks_exact(slice)
        .zip(u.chunks_exact_mut(planes))
        .take(depth_taps)
    {
        transform_weight(wk, cin, cout, uk);
    }
}

/// Where the forward finds its transformed weight planes (16 per depth tap).
#[derive(Clone, Copy)]
pub(super) enum Planes<'a, T> {
    /// [`transform_weights`] of the forward's own weight: `u[kd][ξ][cin][cout]`.
    Direct(&'a [T]),
    /// [`transform_weights`] of the convolution whose backward-data this forward computes (so
    /// `u[kd][ξ][cout][cin]` in this forward's terms). The backward-data's weight is that one
    /// flipped in every axis with the channels swapped, and `G` maps a flipped kernel to its
    /// rows in the order `3, 1, 2, 0` (`G·J = P·G`), so its transform is `U` of the mirrored
    /// depth tap with `ξ = (i, j)` read at `(P i, P j)` and each plane transposed: no second
    /// transform is needed.
    Adjoint(&'a [T]),
}

/// `P`: where row `i` of `G·flip(g)` sits in `G·g`.
const FLIPPED_ROW: [usize; 4] = [3, 1, 2, 0];

impl<T> Planes<'_, T> {
    /// Plane `xi` of depth tap `kd` (of `taps`) as a `cin × cout` GEMM operand of a forward
    /// with those channel counts.
    fn plane(&self, kd: usize, taps: usize, xi: usize, cin: usize, cout: usize) -> View<*const T> {
        let planes = cin * cout;
        match *self {
            Planes::Direct(u) => View {
                ptr: u[(kd * 16 + xi) * planes..].as_ptr(),
                rs: cout,
                cs: 1,
            },
            Planes::Adjoint(u) => {
                let src = FLIPPED_ROW[xi / 4] * 4 + FLIPPED_ROW[xi % 4];
                View {
                    ptr: u[((taps - 1 - kd) * 16 + src) * planes..].as_ptr(),
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
/// [`transform_weights`] and [`Planes`]): `y = conv(x, w) + bias`.
pub(super) fn forward<T: Real>(
    g: &ConvGeometry,
    x: &[T],
    u: Planes<'_, T>,
    bias: Option<&[T]>,
    y: &mut [T],
    threads: &ThreadBuffers<T>,
) {
    let tiling = Tiling::new(g);
    let (cin, cout, taps) = (g.cin, g.cout, tiling.depth_taps());
    assert_eq!(
        u.len(),
        transformed_len(g),
        "winograd: transformed weight size"
    );
    let y_out = SharedOut::new(y);
    tiling.blocks.par_iter().for_each(|&id| {
        threads.with(|TaskBuffers { a: p, b: v, c: m }| {
            let b = tiling.block(id);
            let nt = b.tiles[0] * b.tiles[1];
            let (v_pitch, m_pitch) = (plane_pitch(nt, cin), plane_pitch(nt, cout));
            v.resize(16 * v_pitch, T::zero());
            m.resize(16 * m_pitch, T::zero());
            // Depth taps that meet only padding add nothing; with none left the output is
            // the bias alone.
            let mut accumulate = false;
            for kd in 0..taps {
                let Some(plane) = tiling.input_plane(&b, kd) else {
                    continue;
                };
                tiling.pad_block(x, plane, &b, cin, p);
                simd::input_block(p, 0, tiling.pitch, b.tiles, cin, v);
                for xi in 0..16 {
                    // SAFETY: the block's own buffers hold 16 planes of nt × channels at their
                    // pitch; `u` holds 16 planes of cin × cout per depth tap (asserted above).
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
                            accumulate,
                            View {
                                ptr: v.as_ptr().add(xi * v_pitch),
                                rs: cin,
                                cs: 1,
                            },
                            u.plane(kd, taps, xi, cin, cout),
                            Parallelism::None,
                        );
                    }
                }
                accumulate = true;
            }
            if !accumulate {
                m.fill(T::zero());
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
    let (cin, cout, taps) = (g.cin, g.cout, tiling.depth_taps());
    let planes = cin * cout;
    let groups = group_count(tiling.blocks.len());
    work.partials.reset(transformed_len(g), groups);
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
                let (start, len) = tiling.out_range(&b, cout);
                let extent = [b.out_rows[1] - b.out_rows[0], tiling.out[1]];
                simd::grad_output_block(&dy[start..start + len], extent, b.tiles, cout, z);
                for kd in 0..taps {
                    let Some(plane) = tiling.input_plane(&b, kd) else {
                        continue;
                    };
                    tiling.pad_block(x, plane, &b, cin, p);
                    simd::input_block(p, 0, tiling.pitch, b.tiles, cin, v);
                    partials.with(group, |du| {
                        for xi in 0..16 {
                            // SAFETY: as in the forward; `du` holds 16 planes of cin × cout per
                            // depth tap.
                            unsafe {
                                gemm(
                                    cin,
                                    cout,
                                    nt,
                                    View {
                                        ptr: du.as_mut_ptr().add((kd * 16 + xi) * planes),
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
            }
        })
    });
    // The total goes through the (linear) inverse transform once, so sum it first.
    let du = &mut work.total;
    du.clear();
    du.resize(transformed_len(g), T::zero());
    work.partials.add_total_to(du);
    for (duk, dwk) in du
        .chunks_exact(16 * planes)
        .zip(dw.chunks_exact_mut(9 * planes))
    {
        accumulate_weight_grad(duk, cin, cout, dwk);
    }
}
