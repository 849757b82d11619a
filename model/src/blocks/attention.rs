//! AttnBlock: single-head self-attention over all spatial positions, with a residual.
//!
//! `h = norm(x); q, k, v = q(h), k(h), v(h); y = x + proj_out(softmax(q·kᵀ/√C)·v)`
//!
//! On channels-last activations the tokens × channels matrix is the activation itself, so
//! q/k/v go to the attention op without any transpose. A gradient-mode forward keeps `x`, q,
//! k, v, the attention output and the op's softmax statistics; `norm(x)` is recomputed.

use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::{conv_spec, Conv, ConvOp};
use crate::layers::group_norm::GroupNorm;
use crate::layers::init::Init;
use crate::lora::ConvUnit;
use medvae_runtime::ops::attention::{attention_backward, attention_forward, AttentionSaved};
use medvae_runtime::ops::elementwise::add_assign;
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

#[derive(Debug)]
pub struct AttnBlock {
    pub channels: usize,
    pub norm: GroupNorm,
    pub q: ConvUnit,
    pub k: ConvUnit,
    pub v: ConvUnit,
    pub proj_out: ConvUnit,
    pub recompute: bool,
    saved: Option<Saved>,
}

struct Activations {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    attn: AttentionSaved,
}

enum Saved {
    Full { x: Tensor, act: Box<Activations> },
    Checkpoint { x: Tensor, ctx: Ctx },
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Saved::Full { .. } => "Saved::Full",
            Saved::Checkpoint { .. } => "Saved::Checkpoint",
        })
    }
}

fn no_dx(what: &str) -> RuntimeError {
    RuntimeError::Other(format!("AttnBlock: {what} backward returned no dx"))
}

impl AttnBlock {
    pub fn new(rank: usize, channels: usize, init: &mut Init) -> Result<AttnBlock> {
        let one = |init: &mut Init| -> Result<ConvUnit> {
            Ok(ConvUnit::Plain(Conv::new(
                conv_spec(rank, channels, channels, 1, 1, 0, 0)?,
                rank,
                true,
                init,
            )?))
        };
        let norm = GroupNorm::new(channels, false, init)?;
        let (q, k, v, proj_out) = (one(init)?, one(init)?, one(init)?, one(init)?);
        Ok(AttnBlock {
            channels,
            norm,
            q,
            k,
            v,
            proj_out,
            recompute: false,
            saved: None,
        })
    }

    pub fn inject_lora(&mut self, r: usize, init: &mut Init) -> Result<()> {
        for c in [&mut self.q, &mut self.k, &mut self.v, &mut self.proj_out] {
            c.inject_lora(r, init)?;
        }
        Ok(())
    }

    fn scale(&self) -> f64 {
        (self.channels as f64).powf(-0.5)
    }

    fn run(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Activations)> {
        let (h, _) = self.norm.apply(x)?;
        let q = self.q.conv_forward(&h, ctx)?;
        let k = self.k.conv_forward(&h, ctx)?;
        let v = self.v.conv_forward(&h, ctx)?;
        drop(h);
        let (o, attn) = attention_forward(&q, &k, &v, self.scale())?;
        let mut y = self.proj_out.conv_forward(&o, ctx)?;
        add_assign(&mut y, x)?;
        Ok((y, Activations { q, k, v, o, attn }))
    }

    fn run_backward(&mut self, x: &Tensor, act: Activations, dy: &Tensor) -> Result<Tensor> {
        let d_o = self
            .proj_out
            .conv_backward(Cow::Borrowed(&act.o), dy, true)?
            .ok_or_else(|| no_dx("proj_out"))?;
        let (dq, dk, dv) = attention_backward(
            &act.q,
            &act.k,
            &act.v,
            &act.o,
            &act.attn,
            &d_o,
            self.scale(),
        )?;
        drop(act);
        let (h, stats) = self.norm.apply(x)?;
        let mut dh = self
            .q
            .conv_backward(Cow::Borrowed(&h), &dq, true)?
            .ok_or_else(|| no_dx("q"))?;
        add_assign(
            &mut dh,
            &self
                .k
                .conv_backward(Cow::Borrowed(&h), &dk, true)?
                .ok_or_else(|| no_dx("k"))?,
        )?;
        add_assign(
            &mut dh,
            &self
                .v
                .conv_backward(Cow::Owned(h), &dv, true)?
                .ok_or_else(|| no_dx("v"))?,
        )?;
        let mut dx = self.norm.grad(x, &stats, Cow::Owned(dh))?;
        add_assign(&mut dx, dy)?;
        Ok(dx)
    }
}

impl Parameters for AttnBlock {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.norm.visit_params(&join_key(prefix, "norm"), f);
        self.q.visit_params(&join_key(prefix, "q"), f);
        self.k.visit_params(&join_key(prefix, "k"), f);
        self.v.visit_params(&join_key(prefix, "v"), f);
        self.proj_out.visit_params(&join_key(prefix, "proj_out"), f);
    }
}

impl Layer for AttnBlock {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.saved = None;
        if ctx.grad && self.recompute {
            let ((y, _), replay) = ctx.checkpointed(|c| self.run(&x, c))?;
            self.saved = Some(Saved::Checkpoint { x, ctx: replay });
            return Ok(y);
        }
        let (y, act) = self.run(&x, ctx)?;
        if ctx.grad {
            self.saved = Some(Saved::Full {
                x,
                act: Box::new(act),
            });
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        match self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("AttnBlock"))?
        {
            Saved::Full { x, act } => self.run_backward(&x, *act, dy),
            Saved::Checkpoint { x, mut ctx } => {
                let (_, act) = self.run(&x, &mut ctx)?;
                self.run_backward(&x, act, dy)
            }
        }
    }
}
