//! Inverted dropout (PyTorch `nn.Dropout`): active only in training mode. The mask is a pure
//! function of a stream id drawn from [`crate::layer::Rng`], so a layer keeps the id (8 bytes)
//! and regenerates the mask in its backward instead of storing it.

use crate::layer::Ctx;
use medvae_runtime::ops::elementwise::{dropout_mask, mul};
use medvae_runtime::{Result, Tensor};

/// A drawn dropout mask: `None` means identity (eval mode or `p = 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutDraw {
    pub p: f32,
    pub stream: Option<u64>,
}

impl DropoutDraw {
    /// Draw for one application of dropout with probability `p` in `ctx`.
    pub fn draw(p: f32, ctx: &mut Ctx) -> DropoutDraw {
        let stream = if ctx.train && p > 0.0 {
            Some(ctx.rng.next_stream())
        } else {
            None
        };
        DropoutDraw { p, stream }
    }

    /// `x ⊙ mask` (the same for the forward and, with `dy`, the backward).
    pub fn apply(&self, x: Tensor) -> Result<Tensor> {
        match self.stream {
            None => Ok(x),
            Some(seed) => mul(&x, &dropout_mask(x.shape(), self.p, seed)?),
        }
    }
}
