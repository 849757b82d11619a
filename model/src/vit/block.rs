//! timm's pre-LN transformer `Block` as ViT-B/16 configures it (no LayerScale, no drop-path
//! at inference): `x = x + attn(norm1(x))`, then `x = x + mlp(norm2(x))` with
//! `mlp = fc2(gelu(fc1(·)))` (hidden width `4·width` in ViT-B), exact (erf) GELU, LayerNorm eps 1e-6.

use super::attention::MultiHeadAttention;
use super::linear::{LayerNorm, Linear};
use crate::layer::{join_key, no_saved_state, ParamVisitor, Parameters};
use crate::layers::init::Init;
use medvae_runtime::ops::activation::{activation_backward, activation_forward, Activation};
use medvae_runtime::ops::elementwise::{add, add_assign};
use medvae_runtime::ops::norm::NormSaved;
use medvae_runtime::{Result, Tensor};

/// timm's ViT LayerNorm epsilon (`partial(nn.LayerNorm, eps=1e-6)`).
pub const LN_EPS: f64 = 1e-6;

#[derive(Debug, Clone)]
pub struct Block {
    pub norm1: LayerNorm,
    pub attn: MultiHeadAttention,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    saved: Option<Saved>,
}

/// LayerNorm inputs and statistics (`x`, `x1 = x + attn`), the MLP's input `h2`, the GELU
/// input `f` and output `g`.
#[derive(Debug, Clone)]
struct Saved {
    x: Tensor,
    s1: NormSaved,
    x1: Tensor,
    s2: NormSaved,
    h2: Tensor,
    f: Tensor,
    g: Tensor,
}

impl Block {
    /// A block of `width` features, `heads` heads and an MLP of `hidden` units (timm: 4·width).
    pub fn new(width: usize, heads: usize, hidden: usize, init: &mut Init) -> Result<Block> {
        Ok(Block {
            norm1: LayerNorm::new(width, LN_EPS, init)?,
            attn: MultiHeadAttention::new(width, heads, init)?,
            norm2: LayerNorm::new(width, LN_EPS, init)?,
            fc1: Linear::new(width, hidden, true, init)?,
            fc2: Linear::new(hidden, width, true, init)?,
            saved: None,
        })
    }

    /// `[N, T, width]` → `[N, T, width]`; keeps what the backward needs when `keep`.
    pub fn forward(&mut self, x: Tensor, keep: bool) -> Result<Tensor> {
        let (h1, s1) = self.norm1.apply(&x)?;
        let a = self.attn.forward(h1, keep)?;
        let x1 = add(&x, &a)?;
        drop(a);
        let (h2, s2) = self.norm2.apply(&x1)?;
        let f = self.fc1.apply(&h2)?;
        let g = activation_forward(Activation::Gelu, &f)?;
        let m = self.fc2.apply(&g)?;
        let x2 = add(&x1, &m)?;
        self.saved = if keep {
            Some(Saved {
                x,
                s1,
                x1,
                s2,
                h2,
                f,
                g,
            })
        } else {
            None
        };
        Ok(x2)
    }

    /// `dx` from `dy`; parameter gradients accumulated where trainable.
    pub fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let Saved {
            x,
            s1,
            x1,
            s2,
            h2,
            f,
            g,
        } = self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("vit Block"))?;
        // MLP branch: dx1 = dy + norm2ᵀ(fc1ᵀ(gelu'(fc2ᵀ dy))).
        let dg = self.fc2.grad_x(&g, dy)?;
        drop(g);
        let df = activation_backward(Activation::Gelu, &f, &dg)?;
        drop((f, dg));
        let dh2 = self.fc1.grad_x(&h2, &df)?;
        drop((h2, df));
        let mut dx1 = self.norm2.grad(&x1, &s2, &dh2)?;
        add_assign(&mut dx1, dy)?;
        drop(x1);
        // Attention branch: dx = dx1 + norm1ᵀ(attnᵀ dx1).
        let dh1 = self.attn.backward(&dx1)?;
        let mut dx = self.norm1.grad(&x, &s1, &dh1)?;
        add_assign(&mut dx, &dx1)?;
        Ok(dx)
    }
}

impl Parameters for Block {
    /// timm's registration order: norm1, attn, norm2, mlp.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.norm1.visit_params(&join_key(prefix, "norm1"), f);
        self.attn.visit_params(&join_key(prefix, "attn"), f);
        self.norm2.visit_params(&join_key(prefix, "norm2"), f);
        let mlp = join_key(prefix, "mlp");
        self.fc1.visit_params(&join_key(&mlp, "fc1"), f);
        self.fc2.visit_params(&join_key(&mlp, "fc2"), f);
    }
}
