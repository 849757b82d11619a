//! Winograd F(2×2, 3×3) for 3×3 stride-1 2D convolutions (also 3D tensors with a `1×3×3`
//! kernel): 16 GEMMs of `tiles × cin × cout` replace the 9 taps' `4·tiles × cin × cout`, a
//! 2.25× cut in multiply-adds, for transforms that are a few additions per value.
//!
//! Tiles are 4×4 windows of the zero-padded input at stride 2, each producing a 2×2 output
//! block. Work is split into blocks of tile rows; per block the input transform `V = Bᵀ d B`,
//! the 16 GEMMs `M_ξ = V_ξ · U_ξ` (with `U = G g Gᵀ` the transformed weight) and the output
//! transform `Y = Aᵀ M A` run back to back in cache. Backward-data of the same convolution is
//! this forward applied to `dy` with the flipped, transposed kernel.

use super::pack::{pack, PackSpec};
use super::raw::{gemm, SharedOut, View};
use super::ConvGeometry;
use crate::Real;
use gemm::Parallelism;
use rayon::prelude::*;

/// Tiles per block: the block's `V` and `M` (16 × tiles × channels each) should stay in L2.
const BLOCK_TILES: usize = 64;
/// Channels transformed together (one SIMD-friendly run of the channels-last pixel).
const LANES: usize = 8;

/// The forward of `g` can run as F(2×2, 3×3).
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

/// How the input is packed: padded by `pad_lo`, extended with zeros to cover every tile.
pub(super) fn pack_spec(g: &ConvGeometry) -> PackSpec {
    let out = g.out_spatial();
    PackSpec {
        lo: [0, g.pad_lo[1], g.pad_lo[2]],
        phases: [1, 1],
        step: [1, 1],
        ext: [
            g.in_spatial[0],
            2 * out[1].div_ceil(2) + 2,
            2 * out[2].div_ceil(2) + 2,
        ],
    }
}

/// `U[ξ][ci][co] = (G g Gᵀ)[ξ]` for the tap-major `w` (`[3, 3, cin, cout]`).
pub(super) fn transform_weight<T: Real>(w: &[T], cin: usize, cout: usize, u: &mut [T]) {
    let half = T::c(0.5);
    let block = cin * cout;
    let u_out = SharedOut::new(u);
    (0..cin).into_par_iter().for_each(|ci| {
        let tap = |t: usize, co: usize| w[t * block + ci * cout + co];
        let mut outs = [T::zero(); 16];
        for co in 0..cout {
            // Rows: t = G g (4 × 3).
            let mut t = [[T::zero(); 3]; 4];
            for b in 0..3 {
                let (g0, g1, g2) = (tap(b, co), tap(3 + b, co), tap(6 + b, co));
                t[0][b] = g0;
                t[1][b] = half * (g0 + g1 + g2);
                t[2][b] = half * (g0 - g1 + g2);
                t[3][b] = g2;
            }
            // Columns: (G g) Gᵀ (4 × 4).
            for (i, r) in t.iter().enumerate() {
                outs[i * 4] = r[0];
                outs[i * 4 + 1] = half * (r[0] + r[1] + r[2]);
                outs[i * 4 + 2] = half * (r[0] - r[1] + r[2]);
                outs[i * 4 + 3] = r[2];
            }
            for (xi, &v) in outs.iter().enumerate() {
                // SAFETY: (xi, ci, co) is written by the task of `ci` only.
                unsafe { u_out.range(xi * block + ci * cout + co, 1)[0] = v };
            }
        }
    });
}

/// `Bᵀ d B` of the 4×4 window at pixel `base` (row pitch `pitch` pixels), channels
/// `c0..c0 + LANES` (zero beyond `c`), written to `v[ξ·v_pitch + at ..]`.
#[inline(always)]
fn input_tile<T: Real>(
    src: &[T],
    pitch: usize,
    base: usize,
    c: usize,
    v: &mut [T],
    v_pitch: usize,
    at: usize,
) {
    for c0 in (0..c).step_by(LANES) {
        let n = LANES.min(c - c0);
        let mut d = [[T::zero(); LANES]; 16];
        for i in 0..4 {
            for j in 0..4 {
                let p = (base + i * pitch + j) * c + c0;
                d[i * 4 + j][..n].copy_from_slice(&src[p..p + n]);
            }
        }
        let mut t = [[T::zero(); LANES]; 16];
        for j in 0..4 {
            for l in 0..LANES {
                let (d0, d1, d2, d3) = (d[j][l], d[4 + j][l], d[8 + j][l], d[12 + j][l]);
                t[j][l] = d0 - d2;
                t[4 + j][l] = d1 + d2;
                t[8 + j][l] = d2 - d1;
                t[12 + j][l] = d1 - d3;
            }
        }
        for i in 0..4 {
            let mut o = [[T::zero(); LANES]; 4];
            for l in 0..LANES {
                let (r0, r1, r2, r3) = (t[i * 4][l], t[i * 4 + 1][l], t[i * 4 + 2][l], t[i * 4 + 3][l]);
                o[0][l] = r0 - r2;
                o[1][l] = r1 + r2;
                o[2][l] = r2 - r1;
                o[3][l] = r1 - r3;
            }
            for (j, oj) in o.iter().enumerate() {
                let q = (i * 4 + j) * v_pitch + at + c0;
                v[q..q + n].copy_from_slice(&oj[..n]);
            }
        }
    }
}

/// `Aᵀ M A` of one tile (channels-last rows of `m[ξ·m_pitch + at ..]`) plus bias, written
/// to the `rows × cols` (≤ 2×2) valid corner of the output block at `y[out ..]` (row pitch
/// `pitch` pixels).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_tile<T: Real>(
    m: &[T],
    m_pitch: usize,
    at: usize,
    c: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    out: usize,
    pitch: usize,
    valid: (usize, usize),
) {
    for c0 in (0..c).step_by(LANES) {
        let n = LANES.min(c - c0);
        let mut mm = [[T::zero(); LANES]; 16];
        for (xi, row) in mm.iter_mut().enumerate() {
            let q = xi * m_pitch + at + c0;
            row[..n].copy_from_slice(&m[q..q + n]);
        }
        let mut b = [T::zero(); LANES];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(&bias[c0..c0 + n]);
        }
        // Rows: s = Aᵀ M (2 × 4).
        let mut s = [[T::zero(); LANES]; 8];
        for j in 0..4 {
            for l in 0..LANES {
                let (m0, m1, m2, m3) = (mm[j][l], mm[4 + j][l], mm[8 + j][l], mm[12 + j][l]);
                s[j][l] = m0 + m1 + m2;
                s[4 + j][l] = m1 - m2 - m3;
            }
        }
        for i in 0..valid.0 {
            let mut o = [[T::zero(); LANES]; 2];
            for l in 0..LANES {
                let (r0, r1, r2, r3) = (s[i * 4][l], s[i * 4 + 1][l], s[i * 4 + 2][l], s[i * 4 + 3][l]);
                o[0][l] = r0 + r1 + r2 + b[l];
                o[1][l] = r1 - r2 - r3 + b[l];
            }
            for (j, oj) in o.iter().enumerate().take(valid.1) {
                let q = (out + i * pitch + j) * c + c0;
                y[q..q + n].copy_from_slice(&oj[..n]);
            }
        }
    }
}

/// Forward of `g` (see [`applicable`]) on the packed input `src` (see [`pack_spec`]) with the
/// transformed weight `u`: `y = conv(x, w) + bias`.
pub(super) fn forward_on_source<T: Real>(
    g: &ConvGeometry,
    src: &[T],
    u: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) {
    let out = g.out_spatial();
    let spec = pack_spec(g);
    let (pitch_y, pitch_x) = (spec.ext[1], spec.ext[2]);
    let (tiles_y, tiles_x) = (out[1].div_ceil(2), out[2].div_ceil(2));
    let images = g.batch * g.in_spatial[0];
    let (cin, cout) = (g.cin, g.cout);
    let rows_per_block = (BLOCK_TILES / tiles_x).max(1);
    let blocks: Vec<(usize, usize)> = (0..images)
        .flat_map(|img| (0..tiles_y).step_by(rows_per_block).map(move |ty| (img, ty)))
        .collect();
    let y_out = SharedOut::new(y);
    let image_len = out[1] * out[2] * cout;
    blocks.par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(v, m), &(img, ty0)| {
            let ty1 = (ty0 + rows_per_block).min(tiles_y);
            let nt = (ty1 - ty0) * tiles_x;
            v.resize(16 * nt * cin, T::zero());
            m.resize(16 * nt * cout, T::zero());
            for ty in ty0..ty1 {
                for tx in 0..tiles_x {
                    let base = (img * pitch_y + 2 * ty) * pitch_x + 2 * tx;
                    let t = (ty - ty0) * tiles_x + tx;
                    input_tile(src, pitch_x, base, cin, v, nt * cin, t * cin);
                }
            }
            for xi in 0..16 {
                // SAFETY: the block's own buffers, sized 16 × nt × channels; `u` holds 16
                // blocks of cin × cout (checked by the caller).
                unsafe {
                    gemm(
                        nt,
                        cout,
                        cin,
                        View {
                            ptr: m.as_mut_ptr().add(xi * nt * cout),
                            rs: cout,
                            cs: 1,
                        },
                        false,
                        View {
                            ptr: v.as_ptr().add(xi * nt * cin),
                            rs: cin,
                            cs: 1,
                        },
                        View {
                            ptr: u.as_ptr().add(xi * cin * cout),
                            rs: cout,
                            cs: 1,
                        },
                        Parallelism::None,
                    );
                }
            }
            let (oy0, oy1) = (2 * ty0, (2 * ty1).min(out[1]));
            // SAFETY: blocks own disjoint output rows [oy0, oy1) of their image.
            let dst = unsafe {
                y_out.range(img * image_len + oy0 * out[2] * cout, (oy1 - oy0) * out[2] * cout)
            };
            for ty in ty0..ty1 {
                for tx in 0..tiles_x {
                    let t = (ty - ty0) * tiles_x + tx;
                    let valid = ((out[1] - 2 * ty).min(2), (out[2] - 2 * tx).min(2));
                    let at = (2 * ty - oy0) * out[2] + 2 * tx;
                    output_tile(m, nt * cout, t * cout, cout, bias, dst, at, out[2], valid);
                }
            }
        },
    );
}

/// Pack `x` for [`forward_on_source`] into `buf` (or borrow `x` when no packing is needed).
pub(super) fn packed<'a, T: Real>(g: &ConvGeometry, x: &'a [T], buf: &'a mut Vec<T>) -> &'a [T] {
    let spec = pack_spec(g);
    if spec.is_identity(g.in_spatial) {
        return x;
    }
    buf.resize(g.batch * spec.item_pixels() * g.cin, T::zero());
    pack(x, g.batch, g.in_spatial, g.cin, &spec, buf);
    buf
}
