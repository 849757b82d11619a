//! Softmax over the last dimension of a `[rows, n]` tensor, forward and backward.

use super::activation::{exp_fast, simd};
use super::reduce::{sum_mapped2_f64, sum_mapped_f64};
use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// Minimum elements per rayon task, so short rows are batched together.
const MIN_TASK_ELEMS: usize = 8192;

fn rows_per_task(n: usize) -> usize {
    (MIN_TASK_ELEMS / n.max(1)).max(1)
}

/// Softmax of one row, in place.
fn softmax_row<T: Real>(y: &mut [T]) {
    simd(
        #[inline(always)]
        || softmax_row_body(y),
    )
}

#[inline(always)]
fn softmax_row_body<T: Real>(y: &mut [T]) {
    let m = y
        .iter()
        .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
    for v in y.iter_mut() {
        *v = exp_fast(*v - m);
    }
    let inv = T::c(1.0 / sum_mapped_f64(y, |v| v.f64()));
    for v in y.iter_mut() {
        *v *= inv;
    }
}

/// `y[r, :] = softmax(x[r, :])`, with the row maximum subtracted for stability.
pub fn softmax_forward<T: Real>(
    x: &[T],
    rows: usize,
    n: usize,
    y: &mut [T],
) -> Result<(), KernelError> {
    check_len("softmax_forward", "x", x.len(), rows * n)?;
    check_len("softmax_forward", "y", y.len(), rows * n)?;
    y.copy_from_slice(x);
    softmax_inplace(y, rows, n)
}

/// Softmax of every row of `x`, in place (attention scores).
pub fn softmax_inplace<T: Real>(x: &mut [T], rows: usize, n: usize) -> Result<(), KernelError> {
    check_len("softmax_inplace", "x", x.len(), rows * n)?;
    if n == 0 {
        return Ok(());
    }
    x.par_chunks_mut(n)
        .with_min_len(rows_per_task(n))
        .for_each(softmax_row);
    Ok(())
}

/// Softmax backward from the output: `dx = y ⊙ (dy − Σ_j y_j·dy_j)` per row (overwrites `dx`).
pub fn softmax_backward<T: Real>(
    y: &[T],
    dy: &[T],
    rows: usize,
    n: usize,
    dx: &mut [T],
) -> Result<(), KernelError> {
    check_len("softmax_backward", "y", y.len(), rows * n)?;
    check_len("softmax_backward", "dy", dy.len(), rows * n)?;
    check_len("softmax_backward", "dx", dx.len(), rows * n)?;
    if n == 0 {
        return Ok(());
    }
    dx.par_chunks_mut(n)
        .zip(y.par_chunks(n).zip(dy.par_chunks(n)))
        .with_min_len(rows_per_task(n))
        .for_each(|(d, (yr, gr))| {
            let dot = T::c(sum_mapped2_f64(yr, gr, |a, b| a.f64() * b.f64()));
            for ((o, &yv), &g) in d.iter_mut().zip(yr).zip(gr) {
                *o = yv * (g - dot);
            }
        });
    Ok(())
}
