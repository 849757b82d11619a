//! The building blocks of one attention tile: a checked strided GEMM on the `gemm` crate and
//! the row-wise softmax steps on a score tile, compiled twice (baseline and AVX2+FMA, picked
//! at run time) because the crate is built without `target-cpu` flags and these loops run
//! over every one of the tokens² scores.

use super::super::activation::exp_fast;
use crate::Real;
use gemm::Parallelism;
use rayon::prelude::*;

/// A read-only matrix inside a slice: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// A writable matrix inside a slice: element `(i, j)` is `data[i·rs + j·cs]`.
pub(super) struct MatMut<'a, T> {
    pub data: &'a mut [T],
    pub rs: usize,
    pub cs: usize,
}

/// Row-major `rows × cols` view of the start of `data`.
pub(super) fn rows<T>(data: &[T], cols: usize) -> Mat<'_, T> {
    Mat {
        data,
        rs: cols,
        cs: 1,
    }
}

/// The transpose of the row-major `rows × cols` matrix at the start of `data` (so `cols × rows`).
pub(super) fn rows_t<T>(data: &[T], cols: usize) -> Mat<'_, T> {
    Mat {
        data,
        rs: 1,
        cs: cols,
    }
}

/// Row-major `rows × cols` writable view of the start of `data`.
pub(super) fn rows_mut<T>(data: &mut [T], cols: usize) -> MatMut<'_, T> {
    MatMut {
        data,
        rs: cols,
        cs: 1,
    }
}

/// Whether the last element `(r-1, c-1)` of an `r × c` view lies inside the slice.
fn fits(len: usize, r: usize, c: usize, rs: usize, cs: usize) -> bool {
    r == 0 || c == 0 || (r - 1) * rs + (c - 1) * cs < len
}

/// `dst (m×n) = [dst +] alpha · lhs (m×k) · rhs (k×n)`, serial (callers run inside rayon tasks).
///
/// The element type must be f32 or f64 (checked once by the public entry points). Views are
/// checked against their slices; a view that does not fit is a bug in the tiling arithmetic,
/// not a consequence of user input (lengths are validated before any tile is formed).
pub(super) fn gemm<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: MatMut<T>,
    accumulate: bool,
    alpha: T,
    lhs: Mat<T>,
    rhs: Mat<T>,
) {
    assert!(
        fits(dst.data.len(), m, n, dst.rs, dst.cs)
            && fits(lhs.data.len(), m, k, lhs.rs, lhs.cs)
            && fits(rhs.data.len(), k, n, rhs.rs, rhs.cs),
        "attention: internal tiling error ({m}×{n}×{k})"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = T::zero();
                }
            }
        }
        return;
    }
    // SAFETY: every view was checked to lie inside its slice; `dst` is a unique borrow, so it
    // does not alias `lhs` or `rhs`; T is f32 or f64 (the public entry points refuse other
    // types before any tile work starts), the types `gemm` implements.
    // gemm computes dst := α·dst + β·lhs·rhs, reading dst only when asked to.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::one(),
            alpha,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Independent accumulators of the row reductions (lets the compiler vectorise them).
const LANES: usize = 8;

/// Largest element of a row (NaNs are skipped, as `f32::max` does).
#[inline(always)]
fn row_max<T: Real>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a = a.max(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(T::neg_infinity(), |m, &v| m.max(v));
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `x = exp(x − shift)` in place; returns `Σ x` (lanes in `T`, total in f64). Two simple
/// loops rather than one: each vectorises cleanly, and the row is in L1 for the second.
#[inline(always)]
fn exp_shift_sum<T: Real>(x: &mut [T], shift: T) -> f64 {
    x.iter_mut().for_each(|v| *v = exp_fast(*v - shift));
    let mut acc = [T::zero(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|v| v.f64()).sum();
    tail + acc.iter().map(|a| a.f64()).sum::<f64>()
}

/// Online-softmax state of the query rows of one tile: running maximum and running sum of
/// `exp(score − max)` (in f64: it adds up to tokens terms).
pub(super) struct RowStats<T> {
    pub max: Vec<T>,
    pub sum: Vec<f64>,
}

impl<T: Real> RowStats<T> {
    pub fn new(rows: usize) -> Self {
        RowStats {
            max: vec![T::neg_infinity(); rows],
            sum: vec![0.0; rows],
        }
    }

    pub fn reset(&mut self, rows: usize) {
        self.max.clear();
        self.max.resize(rows, T::neg_infinity());
        self.sum.clear();
        self.sum.resize(rows, 0.0);
    }
}

/// One online-softmax step. `scores` holds `rows × cols` scaled scores of the next key tile;
/// they become `exp(score − new max)`, the statistics are updated, and the accumulated
/// output rows (`acc`, `rows × dim`) are rescaled by `exp(old max − new max)` where the
/// maximum grew. `first` says no earlier tile exists (`acc` is then not read).
#[inline(always)]
fn online_softmax_step_impl<T: Real>(
    scores: &mut [T],
    cols: usize,
    stats: &mut RowStats<T>,
    acc: &mut [T],
    dim: usize,
    first: bool,
) {
    for (r, row) in scores.chunks_exact_mut(cols).enumerate() {
        let old = stats.max[r];
        let new = old.max(row_max(row));
        let s = exp_shift_sum(row, new);
        if first || old == new {
            stats.sum[r] += s;
        } else {
            let corr = (old.f64() - new.f64()).exp();
            stats.sum[r] = stats.sum[r] * corr + s;
            let c = T::c(corr);
            acc[r * dim..(r + 1) * dim].iter_mut().for_each(|v| *v *= c);
        }
        stats.max[r] = new;
    }
}

/// `p = exp(s − lse_i)` in place on a column-major `rows × cols` score tile (one column per
/// key, `lse` per query row): the recomputed probabilities.
#[inline(always)]
fn probs_from_lse_impl<T: Real>(scores: &mut [T], rows: usize, lse: &[T]) {
    for col in scores.chunks_exact_mut(rows) {
        col.iter_mut()
            .zip(lse)
            .for_each(|(v, &l)| *v = exp_fast(*v - l));
    }
}

/// `dp = p ∘ (dp − delta_i)` in place on column-major `rows × cols` tiles: the score gradient.
#[inline(always)]
fn score_grad_impl<T: Real>(dp: &mut [T], p: &[T], rows: usize, delta: &[T]) {
    for (g, pc) in dp.chunks_exact_mut(rows).zip(p.chunks_exact(rows)) {
        g.iter_mut()
            .zip(pc)
            .zip(delta)
            .for_each(|((g, &p), &dl)| *g = p * (*g - dl));
    }
}

/// Columns `c0..c0 + dst.len() / rows` of a row-major `rows × cols` matrix, transposed:
/// `dst[(c − c0)·rows + r] = src[r·cols + c]`, in blocks that stay in L1.
fn transpose_columns<T: Real>(src: &[T], rows: usize, cols: usize, c0: usize, dst: &mut [T]) {
    const BLOCK: usize = 32;
    let width = dst.len() / rows;
    for r0 in (0..rows).step_by(BLOCK) {
        for c in 0..width {
            let src_col = src[r0 * cols + c0 + c..].iter().step_by(cols);
            let dst_col = &mut dst[c * rows + r0..c * rows + (r0 + BLOCK).min(rows)];
            dst_col.iter_mut().zip(src_col).for_each(|(d, &s)| *d = s);
        }
    }
}

/// `[batch, rows, cols]` → `[batch, cols, rows]` (each entry transposed), in parallel. It gives
/// the tile products operands in the layout the `gemm` crate consumes without repacking them
/// for every tile.
pub(super) fn transposed<T: Real>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    const COLS_PER_TASK: usize = 16;
    let mut out = vec![T::zero(); x.len()];
    if x.is_empty() {
        return out;
    }
    out.par_chunks_mut(rows * cols)
        .zip(x.par_chunks(rows * cols))
        .for_each(|(dst, src)| {
            dst.par_chunks_mut(COLS_PER_TASK * rows)
                .enumerate()
                .for_each(|(t, block)| {
                    transpose_columns(src, rows, cols, t * COLS_PER_TASK, block)
                });
        });
    out
}

/// Runs `$impl(args)` through an AVX2+FMA copy when the CPU has those features.
macro_rules! dispatch {
    ($name:ident, $avx:ident, $impl:ident, ($($arg:ident : $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx<T: Real>($($arg: $ty),*) {
            $impl($($arg),*)
        }

        pub(super) fn $name<T: Real>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the features the copy was compiled for are present on this CPU.
                return unsafe { $avx($($arg),*) };
            }
            $impl($($arg),*)
        }
    };
}

dispatch!(
    online_softmax_step,
    online_softmax_step_avx2,
    online_softmax_step_impl,
    (scores: &mut [T], cols: usize, stats: &mut RowStats<T>, acc: &mut [T], dim: usize, first: bool)
);
dispatch!(
    probs_from_lse,
    probs_from_lse_avx2,
    probs_from_lse_impl,
    (scores: &mut [T], rows: usize, lse: &[T])
);
dispatch!(
    score_grad,
    score_grad_avx2,
    score_grad_impl,
    (dp: &mut [T], p: &[T], rows: usize, delta: &[T])
);
