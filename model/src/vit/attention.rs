//! timm's `Attention` (multi-head self-attention with a fused `qkv` projection with bias, no
//! q/k norm): `qkv = x·Wᵀ + b` is `[N, T, 3, heads, head_dim]` per token, each head attends
//! with scale `head_dim^-½`, the heads are concatenated back per token and projected by `proj`.
//!
//! The heads run through the engine's flash-style attention kernel as `N·heads` independent
//! sequences (`[N·heads, 1, T, head_dim]`, tokens × head features), so the `T × T` scores are
//! never stored; splitting and merging heads are copies of `T·3·width` values per sample.

use super::linear::Linear;
use crate::layer::{join_key, no_saved_state, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::ops::attention::{attention_backward, attention_forward, AttentionSaved};
use medvae_runtime::{Result, RuntimeError, Tensor};
use rayon::prelude::*;

#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    pub heads: usize,
    pub qkv: Linear,
    pub proj: Linear,
    saved: Option<Saved>,
}

/// The forward input (`qkv`'s input), the per-head `q, k, v, o`, the attention statistics and
/// the merged heads (`proj`'s input).
#[derive(Debug, Clone)]
struct Saved {
    x: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    att: AttentionSaved,
    merged: Tensor,
}

/// `(n, t, width)` of a `[N, T, width]` token tensor.
fn ntc(op: &str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match *x.shape() {
        [n, t, c] => Ok((n, t, c)),
        _ => Err(RuntimeError::shape(
            op,
            format!("expected tokens [N, T, C], got {:?}", x.shape()),
        )),
    }
}

/// Head geometry of a `[N, T, parts·heads·hd]` token tensor.
#[derive(Debug, Clone, Copy)]
struct HeadDims {
    t: usize,
    heads: usize,
    hd: usize,
}

/// Split `[N, T, parts·heads·hd]` tokens into `parts` tensors `[N·heads, 1, T, hd]` (timm's
/// `reshape(N, T, parts, heads, hd).permute(2, 0, 3, 1, 4)`).
fn split_heads(d: HeadDims, src: &[f32], dst: &mut [&mut [f32]]) {
    let width = dst.len() * d.heads * d.hd;
    // One task per (part, sample·head): each owns a contiguous `[T, hd]` block of its part.
    let blocks: Vec<(usize, usize, &mut [f32])> = dst
        .iter_mut()
        .enumerate()
        .flat_map(|(p, part)| {
            part.chunks_mut(d.t * d.hd)
                .enumerate()
                .map(move |(b, blk)| (p, b, blk))
        })
        .collect();
    blocks.into_par_iter().for_each(|(p, b, blk)| {
        let (s, h) = (b / d.heads, b % d.heads);
        for (i, row) in blk.chunks_mut(d.hd).enumerate() {
            let at = (s * d.t + i) * width + (p * d.heads + h) * d.hd;
            row.copy_from_slice(&src[at..at + d.hd]);
        }
    });
}

/// The inverse of [`split_heads`]: `parts` tensors `[N·heads, 1, T, hd]` into tokens.
fn merge_heads(d: HeadDims, src: &[&[f32]], dst: &mut [f32]) {
    let width = src.len() * d.heads * d.hd;
    dst.par_chunks_mut(width)
        .enumerate()
        .for_each(|(row_idx, row)| {
            let (s, i) = (row_idx / d.t, row_idx % d.t);
            for (p, part) in src.iter().enumerate() {
                for h in 0..d.heads {
                    let from = ((s * d.heads + h) * d.t + i) * d.hd;
                    let at = (p * d.heads + h) * d.hd;
                    row[at..at + d.hd].copy_from_slice(&part[from..from + d.hd]);
                }
            }
        });
}

impl MultiHeadAttention {
    pub fn new(width: usize, heads: usize, init: &mut Init) -> Result<MultiHeadAttention> {
        if heads == 0 || !width.is_multiple_of(heads) {
            return Err(RuntimeError::Other(format!(
                "attention: width {width} does not split into {heads} heads"
            )));
        }
        Ok(MultiHeadAttention {
            heads,
            qkv: Linear::new(width, 3 * width, true, init)?,
            proj: Linear::new(width, width, true, init)?,
            saved: None,
        })
    }

    fn head_dim(&self) -> usize {
        self.proj.out_features() / self.heads
    }

    fn scale(&self) -> f64 {
        (self.head_dim() as f64).powf(-0.5)
    }

    /// `[N, T, width]` → `[N, T, width]`; keeps what the backward needs when `keep`.
    pub fn forward(&mut self, x: Tensor, keep: bool) -> Result<Tensor> {
        const OP: &str = "vit attention";
        let (n, t, c) = ntc(OP, &x)?;
        let (heads, hd) = (self.heads, self.head_dim());
        if c != heads * hd {
            return Err(RuntimeError::shape(
                OP,
                format!("{c} features, the layer has width {}", heads * hd),
            ));
        }
        let d = HeadDims { t, heads, hd };
        let qkv = self.qkv.apply(&x)?;
        let shape = [n * heads, 1, t, hd];
        let (mut q, mut k, mut v) = (
            Tensor::uninit(&shape),
            Tensor::uninit(&shape),
            Tensor::uninit(&shape),
        );
        split_heads(
            d,
            qkv.f32s(OP)?,
            &mut [q.f32s_mut(OP)?, k.f32s_mut(OP)?, v.f32s_mut(OP)?],
        );
        drop(qkv);
        let (o, att) = attention_forward(&q, &k, &v, self.scale())?;
        let mut merged = Tensor::uninit(&[n, t, c]);
        merge_heads(d, &[o.f32s(OP)?], merged.f32s_mut(OP)?);
        let y = self.proj.apply(&merged)?;
        self.saved = if keep {
            Some(Saved {
                x,
                q,
                k,
                v,
                o,
                att,
                merged,
            })
        } else {
            None
        };
        Ok(y)
    }

    /// `dx` from `dy`; parameter gradients accumulated where trainable.
    pub fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        const OP: &str = "vit attention backward";
        let Saved {
            x,
            q,
            k,
            v,
            o,
            att,
            merged,
        } = self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("vit attention"))?;
        let (n, t, c) = ntc(OP, &x)?;
        let (heads, hd) = (self.heads, self.head_dim());
        let d = HeadDims { t, heads, hd };
        let dmerged = self.proj.grad_x(&merged, dy)?;
        drop(merged);
        let mut d_o = Tensor::uninit(q.shape());
        split_heads(d, dmerged.f32s(OP)?, &mut [d_o.f32s_mut(OP)?]);
        drop(dmerged);
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &att, &d_o, self.scale())?;
        drop((q, k, v, o, d_o));
        let mut dqkv = Tensor::uninit(&[n, t, 3 * c]);
        merge_heads(
            d,
            &[dq.f32s(OP)?, dk.f32s(OP)?, dv.f32s(OP)?],
            dqkv.f32s_mut(OP)?,
        );
        self.qkv.grad_x(&x, &dqkv)
    }
}

impl Parameters for MultiHeadAttention {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.qkv.visit_params(&join_key(prefix, "qkv"), f);
        self.proj.visit_params(&join_key(prefix, "proj"), f);
    }
}
