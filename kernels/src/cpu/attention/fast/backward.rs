//! f32 AVX2 attention backward (FlashAttention-2 with key tiles outermost). Per batch entry,
//! `Q` and `dO` are packed once as B groups over queries (for the transposed scores
//! `Sᵀ = K·Qᵀ` and `dPᵀ = V·dOᵀ`) and as B groups over channels (for `dV += Pᵀ·dO` and
//! `dK += dSᵀ·Q`). Each task owns a contiguous range of keys: per key tile it packs
//! `scale·K` and `V` as A panels over keys and `K` as B groups over channels, then for every
//! query tile computes `Pᵀ`, `dSᵀ` in key panels (lane = key), accumulates `dV`, `dK` in
//! registers-friendly panels, and adds `dS·K` into its private `dQ` panels, which are summed
//! over tasks in a fixed order at the end.

use super::super::super::activation::exp_f32_clamped;
use super::forward::FastTiles;
use super::kernel::{tile_product, APanels, BPanels, CPanels, MR, NR};
use super::pack::{a_from_rows, b_from_columns, b_from_rows, round_up};
use crate::cpu::attention::AttentionDims;
use rayon::prelude::*;

/// The forward's inputs and results (`[batch, tokens, dim]`; `lse`, `delta`: `[batch, tokens]`).
pub(in crate::cpu::attention) struct FastInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub d_o: &'a [f32],
    pub lse: &'a [f32],
    pub delta: &'a [f32],
}

/// Geometry shared by all tasks of a call.
#[derive(Clone, Copy)]
struct Geometry {
    tokens: usize,
    dim: usize,
    dim_pad: usize,
    query: usize,
    key: usize,
    scale: f32,
}

/// One batch entry: row-major operands and their packed forms.
struct Entry<'a> {
    k: &'a [f32],
    v: &'a [f32],
    lse: &'a [f32],
    delta: &'a [f32],
    /// `Q`, `dO` as B groups over queries, inner index = channel: `[⌈n/6⌉][dim][6]`.
    q_by_query: &'a [f32],
    do_by_query: &'a [f32],
    /// `Q`, `dO` as B groups over channels, inner index = query: `[dim_pad/6][n][6]`.
    q_by_channel: &'a [f32],
    do_by_channel: &'a [f32],
}

/// A task: keys `r0..r1` of batch entry `b`, owning those rows of `dk`, `dv`, and a private
/// `dQ` accumulator in query panels (`[⌈n/16⌉][dim_pad][16]`).
struct KeyTask<'a> {
    b: usize,
    r0: usize,
    r1: usize,
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    dq_panels: &'a mut [f32],
}

pub(in crate::cpu::attention) fn backward(
    tiles: FastTiles,
    partitions: usize,
    d: &AttentionDims,
    x: &FastInputs,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (n, dim) = (d.tokens, d.dim);
    let dim_pad = round_up(dim, NR);
    let g = Geometry {
        tokens: n,
        dim,
        dim_pad,
        query: tiles.query,
        key: tiles.key,
        scale: d.scale as f32,
    };
    debug_assert!(g.query.is_multiple_of(MR * NR / 2) && g.key.is_multiple_of(MR));
    let per_batch = n * dim;
    let by_query_len = round_up(n, NR) * dim;
    let by_channel_len = dim_pad * n;
    let mut q_by_query = vec![0f32; d.batch * by_query_len];
    let mut do_by_query = vec![0f32; d.batch * by_query_len];
    let mut q_by_channel = vec![0f32; d.batch * by_channel_len];
    let mut do_by_channel = vec![0f32; d.batch * by_channel_len];
    let pack_by_query = |src: &[f32], dst: &mut [f32]| {
        dst.par_chunks_mut(by_query_len)
            .zip(src.par_chunks(per_batch))
            .for_each(|(dst, src)| {
                dst.par_chunks_mut(dim * NR * 64)
                    .enumerate()
                    .for_each(|(c, out)| {
                        b_from_rows(src, dim, c * NR * 64, (n - c * NR * 64).min(NR * 64), out)
                    })
            })
    };
    let pack_by_channel = |src: &[f32], dst: &mut [f32]| {
        dst.par_chunks_mut(by_channel_len)
            .zip(src.par_chunks(per_batch))
            .for_each(|(dst, src)| {
                dst.par_chunks_mut(n * NR)
                    .enumerate()
                    .for_each(|(c, out)| b_from_columns(src, dim, c * NR, 0, n, out))
            })
    };
    rayon::join(
        || {
            rayon::join(
                || pack_by_query(x.q, &mut q_by_query),
                || pack_by_query(x.d_o, &mut do_by_query),
            )
        },
        || {
            rayon::join(
                || pack_by_channel(x.q, &mut q_by_channel),
                || pack_by_channel(x.d_o, &mut do_by_channel),
            )
        },
    );
    let entry = |b: usize| {
        let span = b * per_batch..(b + 1) * per_batch;
        Entry {
            k: &x.k[span.clone()],
            v: &x.v[span],
            lse: &x.lse[b * n..(b + 1) * n],
            delta: &x.delta[b * n..(b + 1) * n],
            q_by_query: &q_by_query[b * by_query_len..(b + 1) * by_query_len],
            do_by_query: &do_by_query[b * by_query_len..(b + 1) * by_query_len],
            q_by_channel: &q_by_channel[b * by_channel_len..(b + 1) * by_channel_len],
            do_by_channel: &do_by_channel[b * by_channel_len..(b + 1) * by_channel_len],
        }
    };

    let panels_len = round_up(n, MR) * dim_pad;
    let mut dq_panels = vec![0f32; d.batch * partitions * panels_len];
    let bounds: Vec<usize> = (0..=partitions).map(|p| p * n / partitions).collect();
    let mut tasks = Vec::with_capacity(d.batch * partitions);
    let mut panel_bufs = dq_panels.chunks_mut(panels_len);
    for (b, (dk_b, dv_b)) in dk
        .chunks_mut(per_batch)
        .zip(dv.chunks_mut(per_batch))
        .enumerate()
    {
        let (mut dk_rest, mut dv_rest) = (dk_b, dv_b);
        for w in bounds.windows(2) {
            let (dk_p, dk_tail) = dk_rest.split_at_mut((w[1] - w[0]) * dim);
            let (dv_p, dv_tail) = dv_rest.split_at_mut((w[1] - w[0]) * dim);
            (dk_rest, dv_rest) = (dk_tail, dv_tail);
            if let Some(dq_p) = panel_bufs.next() {
                tasks.push(KeyTask {
                    b,
                    r0: w[0],
                    r1: w[1],
                    dk: dk_p,
                    dv: dv_p,
                    dq_panels: dq_p,
                });
            }
        }
    }
    tasks.into_par_iter().for_each_init(
        || Scratch::new(&g),
        // SAFETY: the fast engine is only selected when AVX2 and FMA are present.
        |s, task| unsafe { key_range(&g, &entry(task.b), task, s) },
    );

    // dq = scale · Σ_tasks dQ panels (tasks added in order), back to row-major.
    dq.par_chunks_mut(per_batch)
        .enumerate()
        .for_each(|(b, dq_b)| {
            let parts = &dq_panels[b * partitions * panels_len..(b + 1) * partitions * panels_len];
            dq_b.par_chunks_mut(dim * MR)
                .enumerate()
                .for_each(|(p, rows)| {
                    for (ii, row) in rows.chunks_exact_mut(dim).enumerate() {
                        for (c, out) in row.iter_mut().enumerate() {
                            let at = p * dim_pad * MR + c * MR + ii;
                            *out = g.scale
                                * parts
                                    .chunks_exact(panels_len)
                                    .map(|part| part[at])
                                    .sum::<f32>();
                        }
                    }
                });
        });
}

/// Per-task scratch (sized for full tiles).
struct Scratch {
    k_panels: Vec<f32>,
    v_panels: Vec<f32>,
    k_by_channel: Vec<f32>,
    dk_acc: Vec<f32>,
    dv_acc: Vec<f32>,
    probs_t: Vec<f32>,
    grads_t: Vec<f32>,
    grads: Vec<f32>,
}

impl Scratch {
    fn new(g: &Geometry) -> Self {
        let (kt, qt6) = (round_up(g.key, MR), round_up(g.query, NR));
        Scratch {
            k_panels: vec![0.0; kt * g.dim],
            v_panels: vec![0.0; kt * g.dim],
            k_by_channel: vec![0.0; kt * g.dim_pad],
            dk_acc: vec![0.0; kt * g.dim_pad],
            dv_acc: vec![0.0; kt * g.dim_pad],
            probs_t: vec![0.0; kt * qt6],
            grads_t: vec![0.0; kt * qt6],
            grads: vec![0.0; round_up(g.query, MR) * kt],
        }
    }
}

/// All query tiles against keys `r0..r1` (in tiles of `g.key`).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn key_range(g: &Geometry, x: &Entry, task: KeyTask, s: &mut Scratch) {
    let (n, dim, dim_pad) = (g.tokens, g.dim, g.dim_pad);
    let KeyTask {
        r0,
        r1,
        dk,
        dv,
        dq_panels,
        ..
    } = task;
    let channel_groups = dim_pad / NR;
    for k0 in (r0..r1).step_by(g.key) {
        let cols = g.key.min(r1 - k0);
        let key_panels = cols.div_ceil(MR);
        let k_panels = &mut s.k_panels[..key_panels * MR * dim];
        let v_panels = &mut s.v_panels[..key_panels * MR * dim];
        let k_by_channel = &mut s.k_by_channel[..cols * dim_pad];
        a_from_rows(x.k, dim, k0, cols, g.scale, k_panels);
        a_from_rows(x.v, dim, k0, cols, 1.0, v_panels);
        b_from_columns(x.k, dim, 0, k0, cols, k_by_channel);
        let dk_acc = &mut s.dk_acc[..key_panels * MR * dim_pad];
        let dv_acc = &mut s.dv_acc[..key_panels * MR * dim_pad];
        for q0 in (0..n).step_by(g.query) {
            let rows = g.query.min(n - q0);
            let query_groups = rows.div_ceil(NR);
            let t_stride = query_groups * NR * MR;
            let probs_t = &mut s.probs_t[..key_panels * t_stride];
            let grads_t = &mut s.grads_t[..key_panels * t_stride];
            // Sᵀ = scale·K·Qᵀ and dPᵀ = V·dOᵀ in key panels (lane = key, inner = query).
            tile_product(
                key_panels,
                query_groups,
                dim,
                APanels {
                    data: k_panels,
                    stride: dim * MR,
                },
                BPanels::at(x.q_by_query, q0 * dim, dim * NR),
                CPanels {
                    data: probs_t,
                    stride: t_stride,
                },
                false,
            );
            tile_product(
                key_panels,
                query_groups,
                dim,
                APanels {
                    data: v_panels,
                    stride: dim * MR,
                },
                BPanels::at(x.do_by_query, q0 * dim, dim * NR),
                CPanels {
                    data: grads_t,
                    stride: t_stride,
                },
                false,
            );
            let (lse, delta) = (&x.lse[q0..q0 + rows], &x.delta[q0..q0 + rows]);
            for (pt, gt) in probs_t
                .chunks_exact_mut(t_stride)
                .zip(grads_t.chunks_exact_mut(t_stride))
            {
                probs_and_grads_panel(pt, gt, lse, delta);
            }
            // dV += Pᵀ·dO, dK += dSᵀ·Q (scaled at the end): the key panels are the A operands.
            let first_query = q0 == 0;
            tile_product(
                key_panels,
                channel_groups,
                rows,
                APanels {
                    data: probs_t,
                    stride: t_stride,
                },
                BPanels::at(x.do_by_channel, q0 * NR, n * NR),
                CPanels {
                    data: &mut *dv_acc,
                    stride: dim_pad * MR,
                },
                !first_query,
            );
            tile_product(
                key_panels,
                channel_groups,
                rows,
                APanels {
                    data: grads_t,
                    stride: t_stride,
                },
                BPanels::at(x.q_by_channel, q0 * NR, n * NR),
                CPanels {
                    data: &mut *dk_acc,
                    stride: dim_pad * MR,
                },
                !first_query,
            );
            // dQ += dS·K: dS regrouped into query panels (lane = query, inner = key).
            let query_panels = rows.div_ceil(MR);
            let grads = &mut s.grads[..query_panels * MR * cols];
            to_query_panels(grads_t, t_stride, query_groups * NR, cols, grads);
            tile_product(
                query_panels,
                channel_groups,
                cols,
                APanels {
                    data: grads,
                    stride: cols * MR,
                },
                BPanels {
                    data: k_by_channel,
                    stride: cols * NR,
                },
                CPanels {
                    data: &mut dq_panels[q0 * dim_pad..],
                    stride: dim_pad * MR,
                },
                k0 != r0,
            );
        }
        let local = k0 - r0;
        for key in 0..cols {
            let (p, kk) = (key / MR, key % MR);
            let (dk_row, dv_row) = (
                &mut dk[(local + key) * dim..],
                &mut dv[(local + key) * dim..],
            );
            for c in 0..dim {
                let at = p * dim_pad * MR + c * MR + kk;
                dk_row[c] = g.scale * dk_acc[at];
                dv_row[c] = dv_acc[at];
            }
        }
    }
}

/// On one key panel (`queries × 16`, lane = key): `Pᵀ = exp(Sᵀ − lse_i)` and
/// `dSᵀ = Pᵀ ∘ (dPᵀ − D_i)` for the live queries; padded queries become zeros.
#[inline(always)]
fn probs_and_grads_panel(probs: &mut [f32], grads: &mut [f32], lse: &[f32], delta: &[f32]) {
    let live = lse.len() * MR;
    for (((p, gr), &l), &dl) in probs
        .chunks_exact_mut(MR)
        .zip(grads.chunks_exact_mut(MR))
        .zip(lse)
        .zip(delta)
    {
        for (pv, gv) in p.iter_mut().zip(gr.iter_mut()) {
            *pv = exp_f32_clamped(*pv - l);
            *gv = *pv * (*gv - dl);
        }
    }
    probs[live..].fill(0.0);
    grads[live..].fill(0.0);
}

/// Regroup key panels `src[key / 16][query][key % 16]` (panel stride `stride`, `queries`
/// per panel) into query panels `dst[query / 16][key][query % 16]` for `key < cols`; queries
/// past `queries` are zero.
#[inline(always)]
fn to_query_panels(src: &[f32], stride: usize, queries: usize, cols: usize, dst: &mut [f32]) {
    for (qp, panel) in dst.chunks_exact_mut(cols * MR).enumerate() {
        for key in 0..cols {
            let from = &src[(key / MR) * stride + key % MR..];
            let out = &mut panel[key * MR..(key + 1) * MR];
            for (ii, o) in out.iter_mut().enumerate() {
                let query = qp * MR + ii;
                *o = if query < queries {
                    from[query * MR]
                } else {
                    0.0
                };
            }
        }
    }
}
