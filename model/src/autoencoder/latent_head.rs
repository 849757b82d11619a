//! The latent head of `AutoencoderKL` (stage-2 training target):
//!
//! `latent = channel_proj(channel_ds(z) + z)`, `channel_ds = Sequential(Conv 1×1 embed→64, ReLU,
//! Conv 3×3 "same" 64→64, ReLU, Conv 1×1 64→embed)`, `channel_proj = Conv 1×1 embed→embed`.
//! Keys: `channel_ds.{0,2,4}.*`, `channel_proj.*`.

use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::Conv;
use crate::layers::init::Init;
use medvae_runtime::ops::activation::{activation_backward, activation_forward, Activation};
use medvae_runtime::ops::elementwise::{add, add_assign};
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

const HIDDEN: usize = 64;

#[derive(Debug, Clone)]
pub struct LatentHead {
    pub ds0: Conv,
    pub ds2: Conv,
    pub ds4: Conv,
    pub proj: Conv,
    saved: Option<Saved>,
}

/// `z`, the two ReLU outputs (their sign is the ReLU's derivative, and each is the next
/// convolution's input) and `s = channel_ds(z) + z`.
#[derive(Debug, Clone)]
struct Saved {
    z: Tensor,
    r1: Tensor,
    r3: Tensor,
    s: Tensor,
}

fn no_dx(what: &str) -> RuntimeError {
    RuntimeError::Other(format!("latent head: {what} returned no dx"))
}

impl LatentHead {
    pub fn new(rank: usize, embed_dim: usize, init: &mut Init) -> Result<LatentHead> {
        Ok(LatentHead {
            ds0: Conv::square(rank, embed_dim, HIDDEN, 1, 1, 0, init)?,
            ds2: Conv::square(rank, HIDDEN, HIDDEN, 3, 1, 1, init)?,
            ds4: Conv::square(rank, HIDDEN, embed_dim, 1, 1, 0, init)?,
            proj: Conv::square(rank, embed_dim, embed_dim, 1, 1, 0, init)?,
            saved: None,
        })
    }
}

impl Parameters for LatentHead {
    /// Visited under the model's root: `channel_ds.*` then `channel_proj.*`.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        let ds = join_key(prefix, "channel_ds");
        self.ds0.visit_params(&join_key(&ds, "0"), f);
        self.ds2.visit_params(&join_key(&ds, "2"), f);
        self.ds4.visit_params(&join_key(&ds, "4"), f);
        self.proj.visit_params(&join_key(prefix, "channel_proj"), f);
    }
}

impl Layer for LatentHead {
    fn forward(&mut self, z: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(z.clone(), ctx)
    }

    fn forward_owned(&mut self, z: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let r1 = activation_forward(Activation::Relu, &self.ds0.apply(&z)?)?;
        let r3 = activation_forward(Activation::Relu, &self.ds2.apply(&r1)?)?;
        let s = add(&self.ds4.apply(&r3)?, &z)?;
        let latent = self.proj.apply(&s)?;
        self.saved = if ctx.grad {
            Some(Saved { z, r1, r3, s })
        } else {
            None
        };
        Ok(latent)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let Saved { z, r1, r3, s } = self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("LatentHead"))?;
        let ds = self
            .proj
            .grad(Cow::Owned(s), dy, true)?
            .ok_or_else(|| no_dx("channel_proj"))?;
        let d3 = self
            .ds4
            .grad(Cow::Borrowed(&r3), &ds, true)?
            .ok_or_else(|| no_dx("channel_ds.4"))?;
        // relu'(x) = [x > 0] = [relu(x) > 0]: the saved output serves as the input.
        let d2 = activation_backward(Activation::Relu, &r3, &d3)?;
        let d1 = self
            .ds2
            .grad(Cow::Borrowed(&r1), &d2, true)?
            .ok_or_else(|| no_dx("channel_ds.2"))?;
        let d0 = activation_backward(Activation::Relu, &r1, &d1)?;
        let mut dz = self
            .ds0
            .grad(Cow::Owned(z), &d0, true)?
            .ok_or_else(|| no_dx("channel_ds.0"))?;
        add_assign(&mut dz, &ds)?;
        Ok(dz)
    }
}
