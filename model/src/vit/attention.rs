//! timm's `Attention` (multi-head self-attention with a fused `qkv` projection with bias, no
//! q/k norm): `qkv = x·Wᵀ + b` is `[N, T, 3, heads, head_dim]` per token, each head attends
//! with scale `head_dim^-½`, the heads are concatenated back per token and projected by `proj`.
//!
//! The heads run through the engine's flash-style attention kernel as `N·heads` independent
//! sequences (`[N·heads, 1, T, head_dim]`, tokens × head features), so the `T × T` scores are
//! never stored; splitting and merging heads are strided gathers (`T·3·width` values per
//! sample) on the tensors' device.

use super::linear::Linear;
use crate::layer::{join_key, no_saved_state, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::ops::attention::{attention_backward, attention_forward, AttentionSaved};
use medvae_runtime::ops::strided::{gather, scatter, view, StridedView};
use medvae_runtime::{Result, RuntimeError, Tensor};

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

/// Head geometry of `[N, T, parts·heads·hd]` tokens.
#[derive(Debug, Clone, Copy)]
struct HeadDims {
    n: usize,
    t: usize,
    heads: usize,
    hd: usize,
}

impl HeadDims {
    /// Part `part` of `[N, T, parts·heads·hd]` tokens as the view `[N, heads, T, hd]`
    /// (timm's `reshape(N, T, parts, heads, hd).permute(2, 0, 3, 1, 4)[part]`).
    fn heads_of(&self, parts: usize, part: usize) -> Result<StridedView> {
        let width = parts * self.heads * self.hd;
        view(
            "vit attention heads",
            part * self.heads * self.hd,
            &[self.n, self.heads, self.t, self.hd],
            &[self.t * width, self.hd, width, 1],
        )
    }

    /// `[N·heads, 1, T, hd]` heads (one attention sequence each) viewed as tokens
    /// `[N, T, heads, hd]`: the inverse permutation of [`HeadDims::heads_of`] with one part.
    fn tokens_of_heads(&self) -> Result<StridedView> {
        view(
            "vit attention merge",
            0,
            &[self.n, self.t, self.heads, self.hd],
            &[self.heads * self.t * self.hd, self.hd, self.t * self.hd, 1],
        )
    }

    fn sequences(&self) -> [usize; 4] {
        [self.n * self.heads, 1, self.t, self.hd]
    }

    /// Part `part` of `parts` of the tokens `x` as attention sequences.
    fn split(&self, x: &Tensor, parts: usize, part: usize) -> Result<Tensor> {
        gather(x, &self.heads_of(parts, part)?)?.reshape(&self.sequences())
    }

    /// Attention sequences back into `[N, T, heads·hd]` tokens.
    fn merge(&self, o: &Tensor) -> Result<Tensor> {
        gather(o, &self.tokens_of_heads()?)?.reshape(&[self.n, self.t, self.heads * self.hd])
    }
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
        let d = HeadDims { n, t, heads, hd };
        let qkv = self.qkv.apply(&x)?;
        let (q, k, v) = (
            d.split(&qkv, 3, 0)?,
            d.split(&qkv, 3, 1)?,
            d.split(&qkv, 3, 2)?,
        );
        drop(qkv);
        let (o, att) = attention_forward(&q, &k, &v, self.scale())?;
        let merged = d.merge(&o)?;
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
        let (n, t, c) = ntc("vit attention backward", &x)?;
        let d = HeadDims {
            n,
            t,
            heads: self.heads,
            hd: self.head_dim(),
        };
        let dmerged = self.proj.grad_x(&merged, dy)?;
        drop(merged);
        let d_o = d.split(&dmerged, 1, 0)?;
        drop(dmerged);
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &att, &d_o, self.scale())?;
        drop((q, k, v, o, d_o));
        // The three parts tile the gradient of the fused projection's output.
        let mut dqkv = Tensor::zeros_on(&[n, t, 3 * c], x.device())?;
        for (part, g) in [dq, dk, dv].iter().enumerate() {
            scatter(&mut dqkv, &d.heads_of(3, part)?, g, false)?;
        }
        self.qkv.grad_x(&x, &dqkv)
    }
}

impl Parameters for MultiHeadAttention {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.qkv.visit_params(&join_key(prefix, "qkv"), f);
        self.proj.visit_params(&join_key(prefix, "proj"), f);
    }
}
