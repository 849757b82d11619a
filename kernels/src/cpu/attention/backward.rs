//! Attention backward (FlashAttention-2): the probabilities are recomputed tile by tile from
//! `q`, `k` and the saved log-sum-exp, so memory stays `O(tokens·dim + tiles)`.
//!
//! Key-side tasks own rows of `dk` and `dv`; `dq` receives contributions from every key
//! tile, so it is either accumulated per task in private buffers and summed in a fixed order
//! afterwards (fused schedule) or computed in a second pass that owns query rows (two-pass
//! schedule). Either way results do not depend on thread timing.

use super::forward::effective_query_tile;
use super::tile::{
    gemm, probs_from_lse, rows, rows_mut, rows_t, score_grad, transposed, Mat, MatMut,
};
use super::{AttentionDims, AttentionPlan, BackwardSchedule, FUSED_PARTIAL_BUDGET};
use crate::cpu::reduce::sum_mapped2_f64;
use crate::Real;
use rayon::prelude::*;

/// What the backward reads: the forward's inputs (`[batch, tokens, dim]`), its saved `lse`,
/// the upstream gradient and `delta` = [`row_dots`]`(o, d_o)` (`[batch, tokens]`).
pub(super) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub lse: &'a [T],
    pub d_o: &'a [T],
    pub delta: &'a [T],
}

/// `D_i = Σ_c o_ic·d_o_ic` for every row of `dim` values (accumulated in f64).
pub(super) fn row_dots<T: Real>(o: &[T], d_o: &[T], dim: usize) -> Vec<T> {
    const ROWS_PER_TASK: usize = 256;
    let mut delta = vec![T::zero(); o.len() / dim];
    delta
        .par_chunks_mut(ROWS_PER_TASK)
        .zip(
            o.par_chunks(ROWS_PER_TASK * dim)
                .zip(d_o.par_chunks(ROWS_PER_TASK * dim)),
        )
        .for_each(|(out, (o, g))| {
            for ((dl, o), g) in out
                .iter_mut()
                .zip(o.chunks_exact(dim))
                .zip(g.chunks_exact(dim))
            {
                *dl = T::c(sum_mapped2_f64(o, g, |a, b| a.f64() * b.f64()));
            }
        });
    delta
}

/// One batch entry's view of the operands (`tokens × dim` each; `q_t`, `d_o_t` transposed,
/// `dim × tokens`) plus its `lse` and `delta`.
struct Batch<'a, T> {
    q: &'a [T],
    q_t: &'a [T],
    d_o_t: &'a [T],
    k: &'a [T],
    v: &'a [T],
    d_o: &'a [T],
    lse: &'a [T],
    delta: &'a [T],
}

/// Per-task scratch: the probability tile and the score-gradient tile, both column-major
/// (`P[i, j]` at `j·rows + i`): with `Qᵀ` and `dOᵀ` copies, the layout in which four of the
/// five tile products need no repacking inside `gemm`.
struct Scratch<T> {
    probs: Vec<T>,
    grads: Vec<T>,
}

impl<T: Real> Scratch<T> {
    fn new(query_tile: usize, key_tile: usize) -> Self {
        Scratch {
            probs: vec![T::zero(); query_tile * key_tile],
            grads: vec![T::zero(); query_tile * key_tile],
        }
    }
}

/// Tile geometry resolved for one call.
#[derive(Clone, Copy)]
struct Tiles {
    tokens: usize,
    dim: usize,
    query: usize,
    key: usize,
    scale: f64,
}

/// A key-side task: key rows `r0..r1` of batch entry `b`, owning those rows of `dk`, `dv`,
/// and optionally a private `tokens × dim` buffer receiving its share of `dq`.
struct KeyTask<'a, T> {
    b: usize,
    r0: usize,
    r1: usize,
    dk: &'a mut [T],
    dv: &'a mut [T],
    dq: Option<&'a mut [T]>,
}

pub(super) fn backward<T: Real>(
    plan: &AttentionPlan,
    schedule: BackwardSchedule,
    d: &AttentionDims,
    x: &Inputs<T>,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (n, dim) = (d.tokens, d.dim);
    let t = Tiles {
        tokens: n,
        dim,
        query: effective_query_tile(plan, d),
        key: plan.key_tile.min(n),
        scale: d.scale,
    };
    let (q_t, d_o_t) = (transposed(x.q, n, dim), transposed(x.d_o, n, dim));
    let batch = |b: usize| {
        let span = b * n * dim..(b + 1) * n * dim;
        Batch {
            q: &x.q[span.clone()],
            q_t: &q_t[span.clone()],
            d_o_t: &d_o_t[span.clone()],
            k: &x.k[span.clone()],
            v: &x.v[span.clone()],
            d_o: &x.d_o[span],
            lse: &x.lse[b * n..(b + 1) * n],
            delta: &x.delta[b * n..(b + 1) * n],
        }
    };
    match schedule {
        BackwardSchedule::Fused { partitions } => {
            fused(&t, d.batch, partitions.min(n), &batch, dq, dk, dv)
        }
        _ => {
            two_pass_keys(&t, &batch, dk, dv);
            two_pass_queries(&t, &batch, dq);
        }
    }
}

/// The schedule [`BackwardSchedule::Auto`] stands for: fused, with the keys of each batch
/// entry split so that the `batch · partitions` equal tasks are a multiple of twice the thread
/// count (two tasks per thread let work stealing absorb a thread slowed by other load), or of
/// the thread count where that does not fit [`FUSED_PARTIAL_BUDGET`]; two-pass if neither
/// fits.
pub(super) fn resolve_schedule(plan: &AttentionPlan, d: &AttentionDims) -> BackwardSchedule {
    if plan.backward != BackwardSchedule::Auto {
        return plan.backward;
    }
    let threads = rayon::current_num_threads().max(1);
    for round in [2 * threads, threads] {
        let partitions = (round / gcd(d.batch, round)).min(d.tokens).max(1);
        // Private dq buffers, counted as the fast engine pads them (rows to 16, channels to 6).
        let buffers = partitions
            .saturating_mul(d.batch)
            .saturating_mul(d.tokens + 16)
            .saturating_mul(d.dim + 6);
        if partitions == 1 || buffers <= FUSED_PARTIAL_BUDGET {
            return BackwardSchedule::Fused { partitions };
        }
    }
    BackwardSchedule::TwoPass
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Split `data` (rows of `dim`) at the row boundaries `bounds[1..len-1]` into consecutive pieces.
fn split_rows<'a, T>(mut data: &'a mut [T], bounds: &[usize], dim: usize) -> Vec<&'a mut [T]> {
    let mut pieces = Vec::with_capacity(bounds.len().saturating_sub(1));
    for w in bounds.windows(2) {
        let (head, tail) = data.split_at_mut((w[1] - w[0]) * dim);
        pieces.push(head);
        data = tail;
    }
    pieces
}

/// Fused schedule: `partitions` key ranges per batch entry, all tasks in parallel; task 0 of
/// each entry writes `dq` directly, the others private buffers added afterwards.
#[allow(clippy::too_many_arguments)]
fn fused<'a, T: Real>(
    t: &Tiles,
    nbatch: usize,
    partitions: usize,
    batch: &(impl Fn(usize) -> Batch<'a, T> + Sync),
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (n, dim) = (t.tokens, t.dim);
    let per_batch = n * dim;
    let bounds: Vec<usize> = (0..=partitions).map(|p| p * n / partitions).collect();
    let mut partials = vec![T::zero(); nbatch * (partitions - 1) * per_batch];
    let mut partial_bufs = partials.chunks_mut(per_batch);
    let mut tasks = Vec::with_capacity(nbatch * partitions);
    for (b, ((dq_b, dk_b), dv_b)) in dq
        .chunks_mut(per_batch)
        .zip(dk.chunks_mut(per_batch))
        .zip(dv.chunks_mut(per_batch))
        .enumerate()
    {
        let dk_parts = split_rows(dk_b, &bounds, dim);
        let dv_parts = split_rows(dv_b, &bounds, dim);
        let mut dq_b = Some(dq_b);
        for (p, (dk_p, dv_p)) in dk_parts.into_iter().zip(dv_parts).enumerate() {
            let dq_target = if p == 0 {
                dq_b.take()
            } else {
                partial_bufs.next()
            };
            tasks.push(KeyTask {
                b,
                r0: bounds[p],
                r1: bounds[p + 1],
                dk: dk_p,
                dv: dv_p,
                dq: dq_target,
            });
        }
    }
    tasks.into_par_iter().for_each_init(
        || Scratch::new(t.query, t.key),
        |s, task| key_range(t, &batch(task.b), task, s),
    );

    // dq = scale · (own + Σ partials), partials added in partition order.
    const CHUNK: usize = 1 << 14;
    let scale = T::c(t.scale);
    let others = (partitions - 1) * per_batch;
    dq.par_chunks_mut(per_batch)
        .enumerate()
        .for_each(|(b, dq_b)| {
            let mine = &partials[b * others..(b + 1) * others];
            dq_b.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
                let span = c * CHUNK..c * CHUNK + out.len();
                for part in mine.chunks_exact(per_batch) {
                    out.iter_mut()
                        .zip(&part[span.clone()])
                        .for_each(|(o, &v)| *o += v);
                }
                out.iter_mut().for_each(|o| *o *= scale);
            });
        });
}

/// Two-pass schedule, first pass: `dk`, `dv`, one task per (batch entry, key tile).
fn two_pass_keys<'a, T: Real>(
    t: &Tiles,
    batch: &(impl Fn(usize) -> Batch<'a, T> + Sync),
    dk: &mut [T],
    dv: &mut [T],
) {
    let (n, dim) = (t.tokens, t.dim);
    dk.par_chunks_mut(n * dim)
        .zip(dv.par_chunks_mut(n * dim))
        .enumerate()
        .flat_map(|(b, (dk_b, dv_b))| {
            dk_b.par_chunks_mut(t.key * dim)
                .zip(dv_b.par_chunks_mut(t.key * dim))
                .enumerate()
                .map(move |(j, (dk_j, dv_j))| {
                    let r0 = j * t.key;
                    let r1 = r0 + dk_j.len() / dim;
                    KeyTask {
                        b,
                        r0,
                        r1,
                        dk: dk_j,
                        dv: dv_j,
                        dq: None,
                    }
                })
        })
        .for_each_init(
            || Scratch::new(t.query, t.key),
            |s, task| key_range(t, &batch(task.b), task, s),
        );
}

/// All query tiles against key rows `r0..r1` (in tiles of `t.key`): accumulates the task's
/// `dk`, `dv` rows and, if it has one, its `dq` buffer.
fn key_range<T: Real>(t: &Tiles, x: &Batch<T>, task: KeyTask<T>, s: &mut Scratch<T>) {
    let dim = t.dim;
    let scale = T::c(t.scale);
    let KeyTask {
        r0,
        r1,
        dk,
        dv,
        mut dq,
        ..
    } = task;
    for k0 in (r0..r1).step_by(t.key) {
        let cols = t.key.min(r1 - k0);
        let local = (k0 - r0) * dim..(k0 - r0 + cols) * dim;
        let keys = k0 * dim..(k0 + cols) * dim;
        let (k_j, v_j) = (&x.k[keys.clone()], &x.v[keys]);
        let (dk_j, dv_j) = (&mut dk[local.clone()], &mut dv[local]);
        for q0 in (0..t.tokens).step_by(t.query) {
            let nrows = t.query.min(t.tokens - q0);
            let qrows = q0 * dim..(q0 + nrows) * dim;
            let (q_i, do_i) = (&x.q[qrows.clone()], &x.d_o[qrows.clone()]);
            let (probs, grads) = (&mut s.probs[..nrows * cols], &mut s.grads[..nrows * cols]);
            probs_and_score_grads(t, x, q0, k_j, v_j, probs, grads);
            let first_query = q0 == 0;
            // dV += Pᵀ·dO, dK += dSᵀ·Q (scaled below); Pᵀ, dSᵀ are the tiles read row-major.
            gemm(
                (cols, dim, nrows),
                rows_mut(dv_j, dim),
                !first_query,
                T::one(),
                rows(probs, nrows),
                rows(do_i, dim),
            );
            gemm(
                (cols, dim, nrows),
                rows_mut(dk_j, dim),
                !first_query,
                T::one(),
                rows(grads, nrows),
                rows(q_i, dim),
            );
            // dQ += dS·K (scaled by the caller once all partials are in)
            if let Some(dq) = dq.as_deref_mut() {
                let dq_i = rows_mut(&mut dq[qrows], dim);
                gemm(
                    (nrows, dim, cols),
                    dq_i,
                    k0 != r0,
                    T::one(),
                    rows_t(grads, nrows),
                    rows(k_j, dim),
                );
            }
        }
        dk_j.iter_mut().for_each(|g| *g *= scale);
    }
}

/// Two-pass schedule, second pass: `dq`, one task per (batch entry, query tile).
fn two_pass_queries<'a, T: Real>(
    t: &Tiles,
    batch: &(impl Fn(usize) -> Batch<'a, T> + Sync),
    dq: &mut [T],
) {
    let (n, dim) = (t.tokens, t.dim);
    let scale = T::c(t.scale);
    dq.par_chunks_mut(n * dim)
        .enumerate()
        .for_each(|(b, dq_b)| {
            let x = batch(b);
            dq_b.par_chunks_mut(t.query * dim)
                .enumerate()
                .for_each_init(
                    || Scratch::new(t.query, t.key),
                    |s, (i, dq_i)| {
                        let (q0, nrows) = (i * t.query, dq_i.len() / dim);
                        for k0 in (0..n).step_by(t.key) {
                            let cols = t.key.min(n - k0);
                            let keys = k0 * dim..(k0 + cols) * dim;
                            let (k_j, v_j) = (&x.k[keys.clone()], &x.v[keys]);
                            let (probs, grads) =
                                (&mut s.probs[..nrows * cols], &mut s.grads[..nrows * cols]);
                            probs_and_score_grads(t, &x, q0, k_j, v_j, probs, grads);
                            gemm(
                                (nrows, dim, cols),
                                rows_mut(dq_i, dim),
                                k0 != 0,
                                T::one(),
                                rows_t(grads, nrows),
                                rows(k_j, dim),
                            );
                        }
                        dq_i.iter_mut().for_each(|g| *g *= scale);
                    },
                );
        });
}

/// Query rows `q0..q0 + rows` against one key tile (`k_j`, `v_j`: `cols × dim`), into
/// column-major `rows × cols` tiles (`rows = probs.len() / cols`):
/// `probs = P = exp(scale·Q·Kᵀ − lse)`, `grads = dS = P ∘ (dO·Vᵀ − D)`.
fn probs_and_score_grads<T: Real>(
    t: &Tiles,
    x: &Batch<T>,
    q0: usize,
    k_j: &[T],
    v_j: &[T],
    probs: &mut [T],
    grads: &mut [T],
) {
    let (n, dim) = (t.tokens, t.dim);
    let cols = k_j.len() / dim;
    let rows = probs.len() / cols;
    // Q and dO rows read from their transposed copies: column-major operands.
    let q_i = Mat {
        data: &x.q_t[q0..],
        rs: 1,
        cs: n,
    };
    let do_i = Mat {
        data: &x.d_o_t[q0..],
        rs: 1,
        cs: n,
    };
    gemm(
        (rows, cols, dim),
        MatMut {
            data: &mut *probs,
            rs: 1,
            cs: rows,
        },
        false,
        T::c(t.scale),
        q_i,
        rows_t(k_j, dim),
    );
    probs_from_lse(probs, rows, &x.lse[q0..q0 + rows]);
    gemm(
        (rows, cols, dim),
        MatMut {
            data: &mut *grads,
            rs: 1,
            cs: rows,
        },
        false,
        T::one(),
        do_i,
        rows_t(v_j, dim),
    );
    score_grad(grads, probs, rows, &x.delta[q0..q0 + rows]);
}
