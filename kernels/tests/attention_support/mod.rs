//! Shared pieces of the attention tests: the naive f64 reference (which materialises the
//! scores) and error norms; the `AttnBlock` golden tests live in [`attn_block`].
#![allow(dead_code)]

pub mod attn_block;

use crate::ops_support::dot;

/// Scaled scores of query row `i` against every key of one batch entry (`[tokens, dim]`).
pub fn score_row(q: &[f64], k: &[f64], dim: usize, scale: f64, i: usize) -> Vec<f64> {
    let qi = &q[i * dim..(i + 1) * dim];
    k.chunks_exact(dim).map(|kj| dot4(qi, kj) * scale).collect()
}

/// Dot product with four accumulators (vectorises; the references over 9,216 tokens need it).
pub fn dot4(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Softmax of a row and its log-sum-exp.
pub fn softmax_lse(s: &[f64]) -> (Vec<f64>, f64) {
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    (e.iter().map(|v| v / sum).collect(), m + sum.ln())
}

/// Naive forward of one batch entry: `(o, lse)`, with the full `tokens × tokens` matrix.
pub fn naive_forward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dim: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = q.len() / dim;
    let mut o = vec![0.0; n * dim];
    let mut lse = vec![0.0; n];
    for i in 0..n {
        let (p, l) = softmax_lse(&score_row(q, k, dim, scale, i));
        lse[i] = l;
        for (j, pj) in p.iter().enumerate() {
            for c in 0..dim {
                o[i * dim + c] += pj * v[j * dim + c];
            }
        }
    }
    (o, lse)
}

/// Naive backward of one batch entry through the materialised probabilities, written as
/// the textbook softmax backward (`dS = P ∘ (dP − rowsum(P ∘ dP))`): `(dq, dk, dv)`.
pub fn naive_backward(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d_o: &[f64],
    dim: usize,
    scale: f64,
) -> [Vec<f64>; 3] {
    let n = q.len() / dim;
    let p: Vec<Vec<f64>> = (0..n)
        .map(|i| softmax_lse(&score_row(q, k, dim, scale, i)).0)
        .collect();
    let (mut dq, mut dk, mut dv) = (vec![0.0; n * dim], vec![0.0; n * dim], vec![0.0; n * dim]);
    for i in 0..n {
        let doi = &d_o[i * dim..(i + 1) * dim];
        let dp: Vec<f64> = v.chunks_exact(dim).map(|vj| dot(doi, vj)).collect();
        let rowsum: f64 = p[i].iter().zip(&dp).map(|(a, b)| a * b).sum();
        for j in 0..n {
            let ds = p[i][j] * (dp[j] - rowsum);
            for c in 0..dim {
                dv[j * dim + c] += p[i][j] * doi[c];
                dq[i * dim + c] += ds * k[j * dim + c] * scale;
                dk[j * dim + c] += ds * q[i * dim + c] * scale;
            }
        }
    }
    [dq, dk, dv]
}

/// Apply a per-batch-entry function to `[batch, tokens, dim]` operands and concatenate.
pub fn per_batch<const N: usize>(
    batch: usize,
    ops: [&[f64]; N],
    f: impl Fn([&[f64]; N]) -> Vec<Vec<f64>>,
) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for b in 0..batch {
        let parts = ops.map(|x| {
            let per = x.len() / batch;
            &x[b * per..(b + 1) * per]
        });
        for (slot, piece) in f(parts).into_iter().enumerate() {
            if out.len() <= slot {
                out.push(Vec::new());
            }
            out[slot].extend(piece);
        }
    }
    out
}
/// ‖a − b‖ / max(‖b‖, floor·√len): relative, with an absolute floor (an RMS value) for
/// gradients that vanish (with one token `dq = dk = 0` exactly; f32 rounding leaves ~1e-8).
pub fn rel_err_floor(a: &[f64], b: &[f64], floor: f64) -> f64 {
    if a.len() != b.len() || a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    num.sqrt() / den.sqrt().max(floor * (b.len() as f64).sqrt()).max(1e-300)
}

pub fn f64_rel_err(a: &[f64], b: &[f64]) -> f64 {
    rel_err_floor(a, b, 0.0)
}
