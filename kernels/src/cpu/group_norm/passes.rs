//! The memory passes behind the channels-last normalisations (GroupNorm and, through it,
//! BatchNorm): vectorised row loops over `[rows, C]` blocks.
//!
//! With C innermost every pass streams whole rows. Statistics keep per-channel accumulators;
//! tiles of rows × [`TILE_CH`] channels hold them in registers: partial sums in `T` over
//! [`RUN_ROWS`] rows (full vector width), added into f64 ones (so sums of millions of
//! elements stay exact enough), and the inner loops run through [`simd`] so AVX2 machines get
//! 8-lane code from the SSE2 baseline build. Products that are added are written as
//! `mul_add`, one FMA instruction each in those AVX2+FMA copies (Rust never contracts
//! `a * b + c` by itself).

use super::super::activation::{sigmoid, silu_grad, simd};
use crate::Real;
use rayon::prelude::*;

/// Minimum elements per rayon task (below this, scheduling costs more than it saves).
const MIN_BLOCK_ELEMS: usize = 16 * 1024;

/// Rows per task: enough tasks for every thread a few times over, none of them tiny.
pub(crate) fn rows_per_block(n: usize, spatial: usize, channels: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let blocks_per_sample = (4 * threads).div_ceil(n.max(1)).max(1);
    let by_balance = spatial.div_ceil(blocks_per_sample);
    let by_size = MIN_BLOCK_ELEMS.div_ceil(channels.max(1));
    by_balance.max(by_size).clamp(1, spatial.max(1))
}

/// Channels per register tile in the statistics loops: 8 f64 sums and 8 f64 sums of squares
/// stay in vector registers (SSE2 and AVX2 alike) instead of memory.
const TILE_CH: usize = 8;

/// Elements per tile of rows: small enough to stay in L1 while each channel tile walks it.
const TILE_ELEMS: usize = 4096;

/// Accumulate per-channel `Σ (x − k)` into `sum` and `Σ (x − k)²` into `sq` over the rows of
/// `xs` (each `k.len()` wide, `k` values of x), in f64 fed by [`RUN_ROWS`]-row partial sums
/// in `T`. Tiles of rows × [`TILE_CH`] channels keep the accumulators in registers.
#[inline(always)]
fn moments_into<T: Real>(xs: &[T], k: &[f64], sum: &mut [f64], sq: &mut [f64]) {
    let c = k.len();
    let tile_rows = (TILE_ELEMS / c).max(1);
    for tile in xs.chunks(tile_rows * c) {
        let mut c0 = 0;
        while c0 + TILE_CH <= c {
            // The shift is a value of x, so exact in T: x − k runs at full vector width, in
            // partial sums over RUN_ROWS rows that are then added into f64.
            let kk: [T; TILE_CH] = std::array::from_fn(|j| T::c(k[c0 + j]));
            let mut s = [0.0f64; TILE_CH];
            let mut q = [0.0f64; TILE_CH];
            let mut sp = [T::zero(); TILE_CH];
            let mut qp = [T::zero(); TILE_CH];
            for (ri, row) in tile.chunks_exact(c).enumerate() {
                let Some(seg) = row[c0..].first_chunk::<TILE_CH>() else {
                    break;
                };
                for j in 0..TILE_CH {
                    let d = seg[j] - kk[j];
                    sp[j] += d;
                    qp[j] = d.mul_add(d, qp[j]);
                }
                if (ri + 1) % RUN_ROWS == 0 {
                    flush_runs(&mut s, &mut q, &mut sp, &mut qp);
                }
            }
            flush_runs(&mut s, &mut q, &mut sp, &mut qp);
            for j in 0..TILE_CH {
                sum[c0 + j] += s[j];
                sq[c0 + j] += q[j];
            }
            c0 += TILE_CH;
        }
        // Channels past the last full tile.
        for row in tile.chunks_exact(c) {
            for ch in c0..c {
                let d = row[ch].f64() - k[ch];
                sum[ch] += d;
                sq[ch] += d * d;
            }
        }
    }
}

/// Per-channel `(Σ (x − k), Σ (x − k)²)` over the rows of `xs` (each `k.len()` wide), in f64.
/// Returns `[sum; C] ++ [sum_sq; C]`. Each `k` must be representable in `T` (a value of x,
/// as [`sample_moments`] takes): the sums run on `x − k` in `T`.
pub(crate) fn shifted_moments<T: Real>(xs: &[T], k: &[f64]) -> Vec<f64> {
    let c = k.len();
    let mut acc = vec![0.0f64; 2 * c];
    let (sum, sq) = acc.split_at_mut(c);
    simd(
        #[inline(always)]
        || moments_into(xs, k, sum, sq),
    );
    acc
}

/// Add `src` into `dst` element-wise.
pub(crate) fn add_into(dst: &mut [f64], src: &[f64]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Per-sample shifted channel moments of `x` `[n, s, c]`: for each sample the shift (its first
/// row) and `[Σ(x−k); C] ++ [Σ(x−k)²; C]`, partial sums added in block order (deterministic).
pub(super) fn sample_moments<T: Real>(
    x: &[T],
    n: usize,
    s: usize,
    c: usize,
) -> Vec<(Vec<f64>, Vec<f64>)> {
    let block = rows_per_block(n, s, c) * c;
    x.par_chunks(s * c)
        .map(|xs| {
            let k: Vec<f64> = xs[..c].iter().map(|v| v.f64()).collect();
            let parts: Vec<Vec<f64>> = xs
                .par_chunks(block)
                .map(|b| shifted_moments(b, &k))
                .collect();
            let mut acc = vec![0.0f64; 2 * c];
            for p in &parts {
                add_into(&mut acc, p);
            }
            (k, acc)
        })
        .collect()
}

/// Group mean and biased variance from shifted per-channel moments: the group is the channels
/// in `range`, `rows` rows each.
pub(super) fn group_mean_var_from_moments(
    k: &[f64],
    acc: &[f64],
    range: std::ops::Range<usize>,
    rows: usize,
) -> (f64, f64) {
    let c = k.len();
    let (sum, sq) = acc.split_at(c);
    let count = (rows * range.len()) as f64;
    let total: f64 = range.clone().map(|ch| rows as f64 * k[ch] + sum[ch]).sum();
    let mean = total / count;
    // Σ(x − mean)² = Σ[(x − k) + (k − mean)]² per channel.
    let ss: f64 = range
        .map(|ch| {
            let delta = k[ch] - mean;
            sq[ch] + 2.0 * delta * sum[ch] + rows as f64 * delta * delta
        })
        .sum();
    (mean, (ss / count).max(0.0))
}

/// `y = act(x·a + b)` row by row, with per-channel `a`, `b` (rows are `a.len()` wide).
#[inline(always)]
fn affine_rows<T: Real, const SILU: bool>(x: &[T], y: &mut [T], a: &[T], b: &[T]) {
    let c = a.len();
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for (((o, &v), &ac), &bc) in yr.iter_mut().zip(xr).zip(a).zip(b) {
            let h = v.mul_add(ac, bc);
            *o = if SILU { h * sigmoid(h) } else { h };
        }
    }
}

/// Backward pass 2 row by row: `dx = dh·p + x·q + o` per channel, where `dh` is `dy` (plain)
/// or was stored in `dx` by pass 1 (fused). `dy` is `None` in place: the plain kernel's `dh`
/// is then the incoming gradient already in `dx`.
#[inline(always)]
fn combine_rows<T: Real, const SILU: bool>(
    dx: &mut [T],
    x: &[T],
    dy: Option<&[T]>,
    p: &[T],
    q: &[T],
    o: &[T],
) {
    let c = p.len();
    let coef = || p.iter().zip(q).zip(o);
    match dy {
        Some(dy) if !SILU => {
            for ((dr, xr), gr) in dx
                .chunks_exact_mut(c)
                .zip(x.chunks_exact(c))
                .zip(dy.chunks_exact(c))
            {
                for (((d, &xv), &g), ((&pv, &qv), &ov)) in dr.iter_mut().zip(xr).zip(gr).zip(coef())
                {
                    *d = g.mul_add(pv, xv.mul_add(qv, ov));
                }
            }
        }
        // dh is in dx: the fused kernel's pass 1 put it there, or the gradient came in place.
        _ => {
            for (dr, xr) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for ((d, &xv), ((&pv, &qv), &ov)) in dr.iter_mut().zip(xr).zip(coef()) {
                    *d = d.mul_add(pv, xv.mul_add(qv, ov));
                }
            }
        }
    }
}

/// `y = act(x·a + b)` over `[n, s, c]` with per-(sample, channel) coefficients
/// `coef[n] = ([a; C], [b; C])`.
pub(crate) fn apply_affine<T: Real, const SILU: bool>(
    x: &[T],
    y: &mut [T],
    coef: &[(Vec<T>, Vec<T>)],
    s: usize,
    c: usize,
) {
    let block = rows_per_block(coef.len(), s, c) * c;
    y.par_chunks_mut(s * c)
        .zip(x.par_chunks(s * c))
        .zip(coef.par_iter())
        .for_each(|((ys, xs), (a, b))| {
            ys.par_chunks_mut(block)
                .zip(xs.par_chunks(block))
                .for_each(|(yb, xb)| {
                    simd(
                        #[inline(always)]
                        || affine_rows::<T, SILU>(xb, yb, a, b),
                    )
                });
        });
}

/// Pass 1 of the backward over one block of rows: per-channel `Σ dh` and `Σ dh·(x − μ_c)`
/// (μ_c = the mean of the channel's group), returned as `[Σ dh; C] ++ [Σ dh·(x − μ); C]`. For
/// the fused kernel `dh = dy·silu'(x·a + b)` is also stored in `scratch` (the caller's dx) for
/// pass 2; otherwise `dh = dy` and `scratch` is untouched. `dyb` is `None` in place: the
/// incoming gradient is read from `scratch` (each element before it is overwritten).
pub(super) fn backward_sums<T: Real, const SILU: bool>(
    xb: &[T],
    dyb: Option<&[T]>,
    scratch: &mut [T],
    mu: &[f64],
    coef: &(Vec<T>, Vec<T>),
) -> Vec<f64> {
    let c = mu.len();
    let mut acc = vec![0.0f64; 2 * c];
    let (sdh, sdhx) = acc.split_at_mut(c);
    match dyb {
        Some(dyb) => simd(
            #[inline(always)]
            || backward_sums_into::<T, SILU, false>(xb, dyb, scratch, mu, coef, sdh, sdhx),
        ),
        None => simd(
            #[inline(always)]
            || backward_sums_into::<T, SILU, true>(xb, &[], scratch, mu, coef, sdh, sdhx),
        ),
    }
    acc
}

/// Rows a partial sum in `T` runs over before it is added into f64: short enough that f32
/// rounding stays near 16 ulp of the run's terms, long enough that the 8-lane `T` loop does
/// the work instead of 4-lane f64 conversions and adds.
const RUN_ROWS: usize = 16;

/// Add the `T` partial sums into the f64 ones and clear them.
#[inline(always)]
fn flush_runs<T: Real>(
    s: &mut [f64; TILE_CH],
    q: &mut [f64; TILE_CH],
    sp: &mut [T; TILE_CH],
    qp: &mut [T; TILE_CH],
) {
    for j in 0..TILE_CH {
        s[j] += sp[j].f64();
        q[j] += qp[j].f64();
    }
    *sp = [T::zero(); TILE_CH];
    *qp = [T::zero(); TILE_CH];
}

/// Tiled body of [`backward_sums`] (rows × [`TILE_CH`] channels, accumulators in registers).
/// `IN_PLACE`: `dyb` is unused and the gradient is read from `scratch`.
#[inline(always)]
fn backward_sums_into<T: Real, const SILU: bool, const IN_PLACE: bool>(
    xb: &[T],
    dyb: &[T],
    scratch: &mut [T],
    mu: &[f64],
    (a, b): &(Vec<T>, Vec<T>),
    sdh: &mut [f64],
    sdhx: &mut [f64],
) {
    let c = mu.len();
    // d(pre-activation) of one element.
    let dh_of = |x: T, g: T, ch: usize| {
        if SILU {
            g * silu_grad(x * a[ch] + b[ch])
        } else {
            g
        }
    };
    let tile = (TILE_ELEMS / c).max(1) * c;
    for (ti, (xt, st)) in xb.chunks(tile).zip(scratch.chunks_mut(tile)).enumerate() {
        let gt: &[T] = if IN_PLACE {
            &[]
        } else {
            &dyb[ti * tile..ti * tile + xt.len()]
        };
        let mut c0 = 0;
        while c0 + TILE_CH <= c {
            let (aa, bb): ([T; TILE_CH], [T; TILE_CH]) = if SILU {
                (
                    std::array::from_fn(|j| a[c0 + j]),
                    std::array::from_fn(|j| b[c0 + j]),
                )
            } else {
                ([T::zero(); TILE_CH], [T::zero(); TILE_CH])
            };
            // The group means rounded to T, and what that rounding moved them by: sums run on
            // x − k (in T, at full vector width) and are corrected by (k − μ)·Σ dh in f64.
            let kk: [T; TILE_CH] = std::array::from_fn(|j| T::c(mu[c0 + j]));
            let mut s = [0.0f64; TILE_CH];
            let mut q = [0.0f64; TILE_CH];
            // Partial sums in T over at most RUN_ROWS rows, then added into the f64 ones.
            let mut sp = [T::zero(); TILE_CH];
            let mut qp = [T::zero(); TILE_CH];
            for (ri, (xr, sr)) in xt.chunks_exact(c).zip(st.chunks_exact_mut(c)).enumerate() {
                let gr = if IN_PLACE {
                    &*sr
                } else {
                    &gt[ri * c..(ri + 1) * c]
                };
                let (Some(xs), Some(&gs)) = (
                    xr[c0..].first_chunk::<TILE_CH>(),
                    gr[c0..].first_chunk::<TILE_CH>(),
                ) else {
                    break;
                };
                let mut dh = [T::zero(); TILE_CH];
                for j in 0..TILE_CH {
                    dh[j] = if SILU {
                        gs[j] * silu_grad(xs[j].mul_add(aa[j], bb[j]))
                    } else {
                        gs[j]
                    };
                    sp[j] += dh[j];
                    qp[j] = dh[j].mul_add(xs[j] - kk[j], qp[j]);
                }
                if SILU {
                    if let Some(ss) = sr[c0..].first_chunk_mut::<TILE_CH>() {
                        *ss = dh;
                    }
                }
                if (ri + 1) % RUN_ROWS == 0 {
                    flush_runs(&mut s, &mut q, &mut sp, &mut qp);
                }
            }
            flush_runs(&mut s, &mut q, &mut sp, &mut qp);
            for j in 0..TILE_CH {
                sdh[c0 + j] += s[j];
                sdhx[c0 + j] += q[j] + (kk[j].f64() - mu[c0 + j]) * s[j];
            }
            c0 += TILE_CH;
        }
        // Channels past the last full tile.
        for (ri, (xr, sr)) in xt.chunks_exact(c).zip(st.chunks_exact_mut(c)).enumerate() {
            for ch in c0..c {
                let g = if IN_PLACE { sr[ch] } else { gt[ri * c + ch] };
                let dh = dh_of(xr[ch], g, ch);
                if SILU {
                    sr[ch] = dh;
                }
                let d = dh.f64();
                sdh[ch] += d;
                sdhx[ch] += d * (xr[ch].f64() - mu[ch]);
            }
        }
    }
}

/// Backward pass 2 over `[n, s, c]`: `dx = dh·p + x·q + o` with per-(sample, channel)
/// coefficients `lin[n] = (p, q, o)`, in blocks of `block` elements.
pub(super) fn combine_pass<T: Real, const SILU: bool>(
    dx: &mut [T],
    x: &[T],
    dy: Option<&[T]>,
    lin: &[(Vec<T>, Vec<T>, Vec<T>)],
    s: usize,
    c: usize,
    block: usize,
) {
    let per = s * c;
    dx.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .zip(lin.par_iter())
        .enumerate()
        .for_each(|(ni, ((dxs, xs), (p, q, o)))| {
            let dys = dy.map(|d| &d[ni * per..(ni + 1) * per]);
            dxs.par_chunks_mut(block)
                .zip(xs.par_chunks(block))
                .enumerate()
                .for_each(|(bi, (db, xb))| {
                    let gb = dys.map(|d| &d[bi * block..bi * block + db.len()]);
                    simd(
                        #[inline(always)]
                        || combine_rows::<T, SILU>(db, xb, gb, p, q, o),
                    )
                });
        });
}
