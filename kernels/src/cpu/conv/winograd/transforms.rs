//! The Winograd F(2×2, 3×3) transforms, on channels-last data, `LANES` channels at a time:
//! input `V = Bᵀ d B`, output `Y = Aᵀ M A`, output gradient `Z = A dY Aᵀ`, weight
//! `U = G g Gᵀ` and its adjoint `dg = Gᵀ dU G`. With
//! `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`, `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 -1 -1]`.

use super::super::raw::SharedOut;
use crate::Real;
use rayon::prelude::*;

/// Channels transformed together (one SIMD-friendly run of the channels-last pixel).
const LANES: usize = 8;

/// Copy `n ≤ LANES` values; the full-width case has a constant length, so it compiles to
/// vector moves instead of a `memmove` call.
#[inline(always)]
fn copy_lanes<T: Copy>(dst: &mut [T], src: &[T], n: usize) {
    if n == LANES {
        dst[..LANES].copy_from_slice(&src[..LANES]);
    } else {
        dst[..n].copy_from_slice(&src[..n]);
    }
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
                copy_lanes(&mut d[i * 4 + j], &src[p..], n);
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
                let (r0, r1, r2, r3) = (
                    t[i * 4][l],
                    t[i * 4 + 1][l],
                    t[i * 4 + 2][l],
                    t[i * 4 + 3][l],
                );
                o[0][l] = r0 - r2;
                o[1][l] = r1 + r2;
                o[2][l] = r2 - r1;
                o[3][l] = r1 - r3;
            }
            for (j, oj) in o.iter().enumerate() {
                let q = (i * 4 + j) * v_pitch + at + c0;
                copy_lanes(&mut v[q..], oj, n);
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
            copy_lanes(row, &m[q..], n);
        }
        let mut b = [T::zero(); LANES];
        if let Some(bias) = bias {
            copy_lanes(&mut b, &bias[c0..], n);
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
                let (r0, r1, r2, r3) = (
                    s[i * 4][l],
                    s[i * 4 + 1][l],
                    s[i * 4 + 2][l],
                    s[i * 4 + 3][l],
                );
                o[0][l] = r0 + r1 + r2 + b[l];
                o[1][l] = r1 - r2 - r3 + b[l];
            }
            for (j, oj) in o.iter().enumerate().take(valid.1) {
                let q = (out + i * pitch + j) * c + c0;
                copy_lanes(&mut y[q..], oj, n);
            }
        }
    }
}

/// `Z = A dY Aᵀ` of one tile's output gradient (`valid` rows × cols of the 2×2 block present
/// at `dy[out ..]`, row pitch `pitch` pixels; the rest is zero), written to
/// `z[ξ·z_pitch + at ..]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn grad_output_tile<T: Real>(
    dy: &[T],
    out: usize,
    pitch: usize,
    valid: (usize, usize),
    c: usize,
    z: &mut [T],
    z_pitch: usize,
    at: usize,
) {
    for c0 in (0..c).step_by(LANES) {
        let n = LANES.min(c - c0);
        let mut d = [[T::zero(); LANES]; 4];
        for i in 0..valid.0 {
            for j in 0..valid.1 {
                let p = (out + i * pitch + j) * c + c0;
                copy_lanes(&mut d[i * 2 + j], &dy[p..], n);
            }
        }
        // Rows: s = A dY (4 × 2), A = [1 0; 1 1; 1 -1; 0 -1].
        let mut s = [[T::zero(); LANES]; 8];
        for j in 0..2 {
            for l in 0..LANES {
                let (d0, d1) = (d[j][l], d[2 + j][l]);
                s[j][l] = d0;
                s[2 + j][l] = d0 + d1;
                s[4 + j][l] = d0 - d1;
                s[6 + j][l] = T::zero() - d1;
            }
        }
        for i in 0..4 {
            let mut o = [[T::zero(); LANES]; 4];
            for l in 0..LANES {
                let (r0, r1) = (s[i * 2][l], s[i * 2 + 1][l]);
                o[0][l] = r0;
                o[1][l] = r0 + r1;
                o[2][l] = r0 - r1;
                o[3][l] = T::zero() - r1;
            }
            for (j, oj) in o.iter().enumerate() {
                let q = (i * 4 + j) * z_pitch + at + c0;
                copy_lanes(&mut z[q..], oj, n);
            }
        }
    }
}

/// Output-gradient transform of a block of `tiles` tiles from the block's output-gradient
/// rows `dy` (`extent = [rows, width]` pixels) into `z[ξ][tile][c]`.
#[inline(always)]
pub(super) fn grad_output_block<T: Real>(
    dy: &[T],
    extent: [usize; 2],
    tiles: [usize; 2],
    c: usize,
    z: &mut [T],
) {
    let nt = tiles[0] * tiles[1];
    for ty in 0..tiles[0] {
        for tx in 0..tiles[1] {
            let t = ty * tiles[1] + tx;
            let valid = ((extent[0] - 2 * ty).min(2), (extent[1] - 2 * tx).min(2));
            let at = 2 * ty * extent[1] + 2 * tx;
            grad_output_tile(
                dy,
                at,
                extent[1],
                valid,
                c,
                z,
                super::plane_pitch(nt, c),
                t * c,
            );
        }
    }
}

/// `dw[tap][ci][co] += (Gᵀ dU G)[tap]` for one input channel: `du_rows[ξ]` is row `ci` of plane
/// `ξ` of the Winograd-domain weight gradient, `dw_rows[tap]` row `ci` of tap `tap` (all of
/// `cout` elements), `LANES` output channels at a time.
#[inline(always)]
pub(super) fn weight_grad_row<T: Real>(du_rows: &[&[T]; 16], dw_rows: &mut [&mut [T]; 9]) {
    let half = T::c(0.5);
    let cout = dw_rows[0].len();
    for c0 in (0..cout).step_by(LANES) {
        let n = LANES.min(cout - c0);
        let mut u = [[T::zero(); LANES]; 16];
        for (row, src) in u.iter_mut().zip(du_rows) {
            copy_lanes(row, &src[c0..], n);
        }
        // Rows: r = Gᵀ dU (3 × 4), then columns: r G (3 × 3).
        let mut r = [[T::zero(); LANES]; 12];
        for j in 0..4 {
            for l in 0..LANES {
                let (u0, u1, u2, u3) = (u[j][l], u[4 + j][l], u[8 + j][l], u[12 + j][l]);
                r[j][l] = u0 + half * (u1 + u2);
                r[4 + j][l] = half * (u1 - u2);
                r[8 + j][l] = half * (u1 + u2) + u3;
            }
        }
        for a in 0..3 {
            let mut g = [[T::zero(); LANES]; 3];
            for (k, gk) in g.iter_mut().enumerate() {
                copy_lanes(gk, &dw_rows[a * 3 + k][c0..], n);
            }
            for l in 0..LANES {
                let (r0, r1, r2, r3) = (
                    r[a * 4][l],
                    r[a * 4 + 1][l],
                    r[a * 4 + 2][l],
                    r[a * 4 + 3][l],
                );
                g[0][l] += r0 + half * (r1 + r2);
                g[1][l] += half * (r1 - r2);
                g[2][l] += half * (r1 + r2) + r3;
            }
            for (k, gk) in g.iter().enumerate() {
                copy_lanes(&mut dw_rows[a * 3 + k][c0..], gk, n);
            }
        }
    }
}

/// `dw[tap][ci][co] += (Gᵀ dU G)[tap]` for the Winograd-domain weight gradient
/// `du[ξ][ci][co]`. Parallel over `ci`; each task owns row `ci` of every tap.
pub(in super::super) fn accumulate_weight_grad<T: Real>(
    du: &[T],
    cin: usize,
    cout: usize,
    dw: &mut [T],
) {
    let block = cin * cout;
    let dw_out = SharedOut::new(dw);
    (0..cin).into_par_iter().for_each(|ci| {
        let rows: [&[T]; 16] = std::array::from_fn(|xi| {
            let at = xi * block + ci * cout;
            &du[at..at + cout]
        });
        // SAFETY: row `ci` of each tap belongs to this task only.
        let mut out: [&mut [T]; 9] =
            std::array::from_fn(|tap| unsafe { dw_out.range(tap * block + ci * cout, cout) });
        super::simd::weight_grad_row(&rows, &mut out);
    });
}

/// Input transform of a block of `tiles = [rows, cols]` tiles whose first window starts at
/// pixel `first` of `src` (row pitch `pitch` pixels): `v[ξ][tile][c]`.
#[inline(always)]
pub(super) fn input_block<T: Real>(
    src: &[T],
    first: usize,
    pitch: usize,
    tiles: [usize; 2],
    c: usize,
    v: &mut [T],
) {
    let nt = tiles[0] * tiles[1];
    for ty in 0..tiles[0] {
        for tx in 0..tiles[1] {
            let base = first + 2 * ty * pitch + 2 * tx;
            let t = ty * tiles[1] + tx;
            input_tile(src, pitch, base, c, v, super::plane_pitch(nt, c), t * c);
        }
    }
}

/// Output transform of a block of `tiles` tiles from `m[ξ][tile][c]` into the block's output
/// rows `y` (`extent = [rows, width]` pixels, possibly cutting the last tile row/column).
#[inline(always)]
pub(super) fn output_block<T: Real>(
    m: &[T],
    tiles: [usize; 2],
    c: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    extent: [usize; 2],
) {
    let nt = tiles[0] * tiles[1];
    for ty in 0..tiles[0] {
        for tx in 0..tiles[1] {
            let t = ty * tiles[1] + tx;
            let valid = ((extent[0] - 2 * ty).min(2), (extent[1] - 2 * tx).min(2));
            let at = 2 * ty * extent[1] + 2 * tx;
            output_tile(
                m,
                super::plane_pitch(nt, c),
                t * c,
                c,
                bias,
                y,
                at,
                extent[1],
                valid,
            );
        }
    }
}

/// `U[ξ][ci][co] = (G g Gᵀ)[ξ]` for one input channel: `taps[t]` is row `ci` of tap `t` of the
/// weight, `u_rows[ξ]` row `ci` of plane `ξ` (all of `cout` elements), `LANES` output channels
/// at a time.
#[inline(always)]
pub(super) fn transform_weight_row<T: Real>(taps: &[&[T]; 9], u_rows: &mut [&mut [T]; 16]) {
    let half = T::c(0.5);
    let cout = u_rows[0].len();
    for c0 in (0..cout).step_by(LANES) {
        let n = LANES.min(cout - c0);
        let mut g = [[T::zero(); LANES]; 9];
        for (row, src) in g.iter_mut().zip(taps) {
            copy_lanes(row, &src[c0..], n);
        }
        // Rows: t = G g (4 × 3), then columns: t Gᵀ (4 × 4).
        let mut t = [[T::zero(); LANES]; 12];
        for b in 0..3 {
            for l in 0..LANES {
                let (g0, g1, g2) = (g[b][l], g[3 + b][l], g[6 + b][l]);
                t[b][l] = g0;
                t[3 + b][l] = half * (g0 + g1 + g2);
                t[6 + b][l] = half * (g0 - g1 + g2);
                t[9 + b][l] = g2;
            }
        }
        for i in 0..4 {
            let mut o = [[T::zero(); LANES]; 4];
            for l in 0..LANES {
                let (r0, r1, r2) = (t[i * 3][l], t[i * 3 + 1][l], t[i * 3 + 2][l]);
                o[0][l] = r0;
                o[1][l] = half * (r0 + r1 + r2);
                o[2][l] = half * (r0 - r1 + r2);
                o[3][l] = r2;
            }
            for (j, oj) in o.iter().enumerate() {
                copy_lanes(&mut u_rows[i * 4 + j][c0..], oj, n);
            }
        }
    }
}

/// `U[ξ][ci][co] = (G g Gᵀ)[ξ]` for the tap-major `w` (`[3, 3, cin, cout]`). Parallel over
/// `ci`; each task owns row `ci` of every plane.
pub(in super::super) fn transform_weight<T: Real>(w: &[T], cin: usize, cout: usize, u: &mut [T]) {
    let block = cin * cout;
    let u_out = SharedOut::new(u);
    (0..cin).into_par_iter().for_each(|ci| {
        let taps: [&[T]; 9] = std::array::from_fn(|t| {
            let at = t * block + ci * cout;
            &w[at..at + cout]
        });
        // SAFETY: row `ci` of each plane belongs to this task only.
        let mut out: [&mut [T]; 16] =
            std::array::from_fn(|xi| unsafe { u_out.range(xi * block + ci * cout, cout) });
        super::simd::transform_weight_row(&taps, &mut out);
    });
}
