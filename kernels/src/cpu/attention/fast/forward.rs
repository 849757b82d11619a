//! f32 AVX2 attention forward. Per batch entry, `K` is packed once into B groups over keys
//! (inner index = channel) and `V` into B groups over channels (inner index = key). Each
//! rayon task owns a tile of query rows: it packs `scale·Q` into A panels, then per key tile
//! computes the scores into query panels (`S[p][key][16]`), applies the online softmax in
//! that layout (each panel row is a vector lane), and feeds the probabilities straight back
//! as the A operand of `O += P·V`. `O` is accumulated in panel layout and written out at the
//! end.

use super::super::super::activation::exp_f32_clamped;
use super::kernel::{tile_product, APanels, BPanels, CPanels, MR, NR};
use super::pack::{a_from_rows, b_from_columns, b_from_rows, round_up};
use crate::cpu::attention::AttentionDims;
use rayon::prelude::*;

/// Per-task scratch.
struct Scratch {
    q_panels: Vec<f32>,
    scores: Vec<f32>,
    out: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f64>,
}

/// Tile sizes: query rows per task (multiple of 16), keys per tile (multiple of 6).
#[derive(Clone, Copy)]
pub(in crate::cpu::attention) struct FastTiles {
    pub query: usize,
    pub key: usize,
}

pub(in crate::cpu::attention) fn forward(
    tiles: FastTiles,
    d: &AttentionDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &mut [f32],
    lse: &mut [f32],
) {
    let (n, dim) = (d.tokens, d.dim);
    let (qt, kt) = (tiles.query, tiles.key);
    debug_assert!(qt % MR == 0 && kt % NR == 0);
    let per_batch = n * dim;
    let dim_pad = round_up(dim, NR);
    let key_groups_len = round_up(n, NR) * dim; // K as B groups over keys
    let v_groups_len = dim_pad * n; // V as B groups over channels
    o.par_chunks_mut(per_batch)
        .zip(lse.par_chunks_mut(n))
        .enumerate()
        .for_each(|(b, (ob, lb))| {
            let span = b * per_batch..(b + 1) * per_batch;
            let (qb, kb, vb) = (&q[span.clone()], &k[span.clone()], &v[span]);
            let mut k_groups = vec![0f32; key_groups_len];
            let mut v_groups = vec![0f32; v_groups_len];
            rayon::join(
                || {
                    k_groups
                        .par_chunks_mut(dim * NR * 64)
                        .enumerate()
                        .for_each(|(c, dst)| {
                            let r0 = c * NR * 64;
                            b_from_rows(kb, dim, r0, (n - r0).min(NR * 64), dst)
                        })
                },
                || {
                    v_groups
                        .par_chunks_mut(n * NR)
                        .enumerate()
                        .for_each(|(g, dst)| b_from_columns(vb, dim, g * NR, 0, n, dst))
                },
            );
            let tables = Tables {
                k_groups: &k_groups,
                v_groups: &v_groups,
                tokens: n,
                dim,
                dim_pad,
            };
            ob.par_chunks_mut(qt * dim)
                .zip(lb.par_chunks_mut(qt))
                .enumerate()
                .for_each_init(
                    || Scratch {
                        q_panels: vec![0.0; qt * dim],
                        scores: vec![0.0; qt * round_up(kt, NR)],
                        out: vec![0.0; qt * dim_pad],
                        max: vec![0.0; qt],
                        sum: vec![0.0; qt],
                    },
                    |s, (t, (o_tile, lse_tile))| {
                        // SAFETY: the fast engine is only selected when AVX2 and FMA are present.
                        unsafe {
                            query_tile(&tables, d.scale as f32, kt, qb, t * qt, o_tile, lse_tile, s)
                        }
                    },
                );
        });
}

/// One batch entry's packed keys and values.
struct Tables<'a> {
    k_groups: &'a [f32],
    v_groups: &'a [f32],
    tokens: usize,
    dim: usize,
    dim_pad: usize,
}

/// All key tiles for the query rows `q0..q0 + lse_tile.len()`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn query_tile(
    t: &Tables,
    scale: f32,
    key_tile: usize,
    q: &[f32],
    q0: usize,
    o_tile: &mut [f32],
    lse_tile: &mut [f32],
    s: &mut Scratch,
) {
    let (n, dim, dim_pad) = (t.tokens, t.dim, t.dim_pad);
    let rows = lse_tile.len();
    let panels = rows.div_ceil(MR);
    let q_panels = &mut s.q_panels[..panels * MR * dim];
    a_from_rows(q, dim, q0, rows, scale, q_panels);
    let (max, sum) = (&mut s.max[..panels * MR], &mut s.sum[..panels * MR]);
    max.fill(f32::NEG_INFINITY);
    sum.fill(0.0);
    let out = &mut s.out[..panels * MR * dim_pad];
    for k0 in (0..n).step_by(key_tile) {
        let cols = key_tile.min(n - k0);
        let groups = cols.div_ceil(NR);
        let scores = &mut s.scores[..panels * MR * groups * NR];
        let score_stride = groups * NR * MR;
        tile_product(
            panels,
            groups,
            dim,
            APanels {
                data: q_panels,
                stride: dim * MR,
            },
            BPanels {
                data: &t.k_groups[k0 * dim..],
                stride: dim * NR,
            },
            CPanels {
                data: scores,
                stride: score_stride,
            },
            false,
        );
        let first = k0 == 0;
        for (p, panel) in scores.chunks_exact_mut(score_stride).enumerate() {
            let lanes = p * MR..(p + 1) * MR;
            let out_panel = &mut out[p * dim_pad * MR..(p + 1) * dim_pad * MR];
            online_softmax_panel(
                &mut panel[..cols * MR],
                &mut max[lanes.clone()],
                &mut sum[lanes],
                out_panel,
                first,
            );
        }
        tile_product(
            panels,
            dim_pad / NR,
            cols,
            APanels {
                data: scores,
                stride: score_stride,
            },
            BPanels {
                data: &t.v_groups[k0 * NR..],
                stride: n * NR,
            },
            CPanels {
                data: out,
                stride: dim_pad * MR,
            },
            !first,
        );
    }
    for (r, l) in lse_tile.iter_mut().enumerate() {
        let (p, ii) = (r / MR, r % MR);
        let inv = (1.0 / sum[r]) as f32;
        let panel = &out[p * dim_pad * MR..];
        for (c, x) in o_tile[r * dim..(r + 1) * dim].iter_mut().enumerate() {
            *x = panel[c * MR + ii] * inv;
        }
        *l = (max[r] as f64 + sum[r].ln()) as f32;
    }
}

/// Online-softmax step on one query panel of scores (`cols × 16`, lane = query row): the
/// scores become `exp(s − new max)`, and where a row's maximum grew its running sum and its
/// accumulated output (`out_panel`, `dim_pad × 16`) are rescaled by `exp(old − new)`.
#[inline(always)]
fn online_softmax_panel(
    scores: &mut [f32],
    max: &mut [f32],
    sum: &mut [f64],
    out_panel: &mut [f32],
    first: bool,
) {
    let mut tile_max = [f32::NEG_INFINITY; MR];
    for col in scores.chunks_exact(MR) {
        for (m, &v) in tile_max.iter_mut().zip(col) {
            *m = m.max(v);
        }
    }
    let mut new_max = [0f32; MR];
    let mut corr = [1f32; MR];
    let mut grew = false;
    for ii in 0..MR {
        new_max[ii] = max[ii].max(tile_max[ii]);
        if !first && new_max[ii] > max[ii] {
            corr[ii] = exp_f32_clamped(max[ii] - new_max[ii]);
            grew = true;
        }
    }
    let mut tile_sum = [0f32; MR];
    for col in scores.chunks_exact_mut(MR) {
        for ((v, &m), acc) in col.iter_mut().zip(&new_max).zip(tile_sum.iter_mut()) {
            *v = exp_f32_clamped(*v - m);
            *acc += *v;
        }
    }
    for ii in 0..MR {
        sum[ii] = sum[ii] * corr[ii] as f64 + tile_sum[ii] as f64;
        max[ii] = new_max[ii];
    }
    if grew {
        for col in out_panel.chunks_exact_mut(MR) {
            for (x, &c) in col.iter_mut().zip(&corr) {
                *x *= c;
            }
        }
    }
}
