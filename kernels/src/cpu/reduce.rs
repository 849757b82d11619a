//! Sums and means of whole tensors and per sample, forward and backward.
//!
//! Accumulation is in f64 with several independent accumulators (vectorisable, and a form of
//! pairwise summation); parallel sums add per-chunk partials in chunk order, so results do not
//! depend on thread scheduling. The `*_mapped_*` helpers are shared with the loss kernels.

use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// Independent accumulators per serial sum: lets the compiler vectorise float reductions,
/// which it may not reassociate on its own.
const LANES: usize = 8;

/// Elements per rayon task in parallel sums.
const SUM_CHUNK: usize = 1 << 16;

/// `Σ f(x[i])` in f64, serial.
#[inline(always)]
pub(crate) fn sum_mapped_f64<T: Real>(x: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for ch in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += f(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f64>() + tail
}

/// `Σ f(a[i], b[i])` in f64, serial. `a` and `b` must have equal lengths.
#[inline(always)]
pub(crate) fn sum_mapped2_f64<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (xa, xb) in (&mut ca).zip(&mut cb) {
        for ((s, &u), &v) in acc.iter_mut().zip(xa).zip(xb) {
            *s += f(u, v);
        }
    }
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&u, &v)| f(u, v))
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// `Σ f(x[i])` in f64, in parallel for long slices, deterministic.
pub(crate) fn par_sum_mapped_f64<T: Real>(x: &[T], f: impl Fn(T) -> f64 + Sync) -> f64 {
    if x.len() <= SUM_CHUNK {
        return sum_mapped_f64(x, &f);
    }
    let partials: Vec<f64> = x
        .par_chunks(SUM_CHUNK)
        .map(|c| sum_mapped_f64(c, &f))
        .collect();
    partials.iter().sum()
}

/// `Σ f(a[i], b[i])` in f64, in parallel for long slices, deterministic.
pub(crate) fn par_sum_mapped2_f64<T: Real>(
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> f64 + Sync,
) -> f64 {
    if a.len() <= SUM_CHUNK {
        return sum_mapped2_f64(a, b, &f);
    }
    let partials: Vec<f64> = a
        .par_chunks(SUM_CHUNK)
        .zip(b.par_chunks(SUM_CHUNK))
        .map(|(u, v)| sum_mapped2_f64(u, v, &f))
        .collect();
    partials.iter().sum()
}

/// Fill a slice with a value, in parallel for long slices.
pub(crate) fn par_fill<T: Real>(x: &mut [T], v: T) {
    if x.len() <= SUM_CHUNK {
        x.fill(v);
    } else {
        x.par_chunks_mut(SUM_CHUNK).for_each(|c| c.fill(v));
    }
}

/// Elements per sample of a `[n, rest]` tensor of `len` elements.
fn per_sample(kernel: &'static str, len: usize, n: usize) -> Result<usize, KernelError> {
    if n == 0 {
        return if len == 0 {
            Ok(0)
        } else {
            Err(KernelError::Geometry {
                kernel,
                msg: format!("{len} elements cannot split into 0 samples"),
            })
        };
    }
    if !len.is_multiple_of(n) {
        return Err(KernelError::Geometry {
            kernel,
            msg: format!("{len} elements do not split evenly into {n} samples"),
        });
    }
    Ok(len / n)
}

/// Sum of all elements, accumulated in f64.
pub fn sum_f64<T: Real>(x: &[T]) -> f64 {
    par_sum_mapped_f64(x, |v| v.f64())
}

/// `Σ x²` in f64 (a squared L2 norm).
pub fn sum_squares_f64<T: Real>(x: &[T]) -> f64 {
    par_sum_mapped_f64(x, |v| v.f64() * v.f64())
}

/// How many elements are NaN or infinite.
pub fn count_non_finite<T: Real>(x: &[T]) -> usize {
    par_sum_mapped_f64(x, |v| if v.f64().is_finite() { 0.0 } else { 1.0 }) as usize
}

/// Sum of all elements, accumulated in f64 and rounded once.
pub fn sum<T: Real>(x: &[T]) -> T {
    T::c(sum_f64(x))
}

/// Mean of all elements; an empty tensor has no mean and is an error.
pub fn mean<T: Real>(x: &[T]) -> Result<T, KernelError> {
    if x.is_empty() {
        return Err(KernelError::Geometry {
            kernel: "mean",
            msg: "mean of an empty tensor".into(),
        });
    }
    Ok(T::c(sum_f64(x) / x.len() as f64))
}

/// Backward of [`sum`]: every input element gets the upstream gradient (overwrites `dx`).
pub fn sum_backward<T: Real>(dsum: T, dx: &mut [T]) {
    par_fill(dx, dsum);
}

/// Backward of [`mean`]: every input element gets `dmean / len` (overwrites `dx`).
pub fn mean_backward<T: Real>(dmean: T, dx: &mut [T]) {
    let g = T::c(dmean.f64() / dx.len().max(1) as f64);
    par_fill(dx, g);
}

/// Per-sample sums of a `[n, rest]` tensor: `out[i] = Σ_j x[i, j]`.
pub fn sum_per_sample<T: Real>(x: &[T], n: usize, out: &mut [T]) -> Result<(), KernelError> {
    let per = per_sample("sum_per_sample", x.len(), n)?;
    check_len("sum_per_sample", "out", out.len(), n)?;
    if per == 0 {
        out.fill(T::zero());
        return Ok(());
    }
    out.par_iter_mut()
        .zip(x.par_chunks(per))
        .for_each(|(o, xs)| *o = T::c(par_sum_mapped_f64(xs, |v| v.f64())));
    Ok(())
}

/// Backward of [`sum_per_sample`]: `dx[i, j] = dout[i]` (overwrites `dx`).
pub fn sum_per_sample_backward<T: Real>(
    dout: &[T],
    n: usize,
    dx: &mut [T],
) -> Result<(), KernelError> {
    let per = per_sample("sum_per_sample_backward", dx.len(), n)?;
    check_len("sum_per_sample_backward", "dout", dout.len(), n)?;
    if per == 0 {
        return Ok(());
    }
    dx.par_chunks_mut(per)
        .zip(dout.par_iter())
        .for_each(|(d, &g)| par_fill(d, g));
    Ok(())
}

/// Rows per rayon task of [`add_row_sums`].
const ROWS_PER_TASK: usize = 2048;

/// `acc[c] += Σ_r x[r, c]` over the rows of `x` (each `acc.len()` long): bias gradients (rows
/// are pixels or tokens), and the gradients of parameters broadcast over a batch. Summed in f64
/// per task, the task sums added in task order, so the result never depends on scheduling.
/// `x` must hold a whole number of rows.
pub fn add_row_sums<T: Real>(x: &[T], acc: &mut [T]) -> Result<(), KernelError> {
    let cols = acc.len();
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(KernelError::Geometry {
            kernel: "add_row_sums",
            msg: format!("{} elements are not whole rows of {cols}", x.len()),
        });
    }
    let per_task: Vec<Vec<f64>> = x
        .par_chunks(cols * ROWS_PER_TASK)
        .map(|rows| {
            let mut sums = vec![0f64; cols];
            for row in rows.chunks_exact(cols) {
                for (s, &v) in sums.iter_mut().zip(row) {
                    *s += v.f64();
                }
            }
            sums
        })
        .collect();
    let mut sums = vec![0f64; cols];
    for task in &per_task {
        for (s, v) in sums.iter_mut().zip(task) {
            *s += v;
        }
    }
    for (a, s) in acc.iter_mut().zip(sums) {
        *a += T::c(s);
    }
    Ok(())
}
