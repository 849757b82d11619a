//! Attention forward: one rayon task per (batch entry, query tile), each streaming all key
//! tiles through a `query_tile × key_tile` score buffer with an online softmax and
//! accumulating straight into its rows of `o`.

use super::tile::{gemm, online_softmax_step, rows, rows_mut, transposed, Mat, RowStats};
use super::{AttentionDims, AttentionPlan};
use crate::Real;
use rayon::prelude::*;

/// Per-task scratch: one score tile and the online-softmax statistics of its rows.
struct Scratch<T> {
    scores: Vec<T>,
    stats: RowStats<T>,
}

impl<T: Real> Scratch<T> {
    fn new(query_tile: usize, key_tile: usize) -> Self {
        Scratch {
            scores: vec![T::zero(); query_tile * key_tile],
            stats: RowStats::new(query_tile),
        }
    }
}

/// Query rows per task: the plan's tile, shrunk (to no less than 16 rows) when there would
/// be too few tasks to keep every thread busy.
pub(super) fn effective_query_tile(plan: &AttentionPlan, d: &AttentionDims) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let mut tile = plan.query_tile.min(d.tokens.max(1));
    while tile > 16 && d.batch * d.tokens.div_ceil(tile) < 2 * threads {
        tile /= 2;
    }
    tile
}

pub(super) fn forward<T: Real>(
    plan: &AttentionPlan,
    d: &AttentionDims,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
) {
    let (n, dim) = (d.tokens, d.dim);
    let qt = effective_query_tile(plan, d);
    let kt = plan.key_tile.min(n);
    let per_batch = n * dim;
    // Kᵀ per batch entry ([dim, tokens]): the score product's operand without repacking.
    let k_t = transposed(k, n, dim);
    o.par_chunks_mut(per_batch)
        .zip(lse.par_chunks_mut(n))
        .enumerate()
        .for_each(|(b, (ob, lb))| {
            let span = b * per_batch..(b + 1) * per_batch;
            let (qb, ktb, vb) = (&q[span.clone()], &k_t[span.clone()], &v[span]);
            ob.par_chunks_mut(qt * dim)
                .zip(lb.par_chunks_mut(qt))
                .enumerate()
                .for_each_init(
                    || Scratch::new(qt, kt),
                    |s, (t, (o_tile, lse_tile))| {
                        let q0 = t * qt;
                        let q_tile = &qb[q0 * dim..q0 * dim + o_tile.len()];
                        query_tile(d, kt, q_tile, ktb, vb, o_tile, lse_tile, s);
                    },
                );
        });
}

/// All key tiles for one tile of query rows (`q_tile`, `o_tile`: `rows × dim`; `k_t`: this
/// batch entry's keys transposed, `[dim, tokens]`).
#[allow(clippy::too_many_arguments)]
fn query_tile<T: Real>(
    d: &AttentionDims,
    key_tile: usize,
    q_tile: &[T],
    k_t: &[T],
    v: &[T],
    o_tile: &mut [T],
    lse_tile: &mut [T],
    s: &mut Scratch<T>,
) {
    let (n, dim) = (d.tokens, d.dim);
    let nrows = lse_tile.len();
    let scale = T::c(d.scale);
    s.stats.reset(nrows);
    for k0 in (0..n).step_by(key_tile) {
        let cols = key_tile.min(n - k0);
        let scores = &mut s.scores[..nrows * cols];
        // S = scale · Q·Kᵀ
        let k_t_tile = Mat {
            data: &k_t[k0..],
            rs: n,
            cs: 1,
        };
        gemm(
            (nrows, cols, dim),
            rows_mut(scores, cols),
            false,
            scale,
            rows(q_tile, dim),
            k_t_tile,
        );
        let first = k0 == 0;
        online_softmax_step(scores, cols, &mut s.stats, o_tile, dim, first);
        // O = [O·corr +] P·V
        gemm(
            (nrows, dim, cols),
            rows_mut(o_tile, dim),
            !first,
            T::one(),
            rows(scores, cols),
            rows(&v[k0 * dim..(k0 + cols) * dim], dim),
        );
    }
    for ((o_row, l), (&m, &sum)) in o_tile
        .chunks_exact_mut(dim)
        .zip(lse_tile.iter_mut())
        .zip(s.stats.max.iter().zip(&s.stats.sum))
    {
        let inv = T::c(1.0 / sum);
        o_row.iter_mut().for_each(|x| *x *= inv);
        *l = T::c(m.f64() + sum.ln());
    }
}
