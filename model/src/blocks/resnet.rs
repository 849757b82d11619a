//! ResnetBlock of the MedVAE encoder/decoder (no timestep embedding):
//!
//! `y = shortcut(x) + conv2(dropout(silu(norm2(conv1(silu(norm1(x)))))))`
//!
//! with `nin_shortcut` a 1×1 convolution when the channel count changes, identity otherwise.
//!
//! Memory: a gradient-mode forward keeps only `x` and `a1 = conv1(..)`; the normalised
//! activations `silu(norm(·))` that the convolutions' weight gradients need are recomputed in
//! the backward (a memory-bound GroupNorm pass, cheap next to the 3×3 convolutions), halving
//! what the block holds. With `recompute` it keeps only `x` and re-runs the whole forward in
//! its backward (activation checkpointing).

use crate::blocks::norm_conv::{norm_conv_backward, norm_conv_forward, IDENTITY};
use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::{conv_spec, Conv, ConvOp};
use crate::layers::dropout::DropoutDraw;
use crate::layers::group_norm::GroupNorm;
use crate::layers::init::Init;
use crate::lora::ConvUnit;
use medvae_runtime::ops::elementwise::add_assign;
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

#[derive(Debug, Clone)]
pub struct ResnetBlock {
    pub in_channels: usize,
    pub out_channels: usize,
    pub norm1: GroupNorm,
    pub conv1: ConvUnit,
    pub norm2: GroupNorm,
    pub dropout: f32,
    pub conv2: ConvUnit,
    pub nin_shortcut: Option<ConvUnit>,
    /// Activation checkpointing: keep only the input, re-run the forward in the backward.
    pub recompute: bool,
    saved: Option<Saved>,
}

#[derive(Debug, Clone)]
enum Saved {
    Full {
        x: Tensor,
        a1: Tensor,
        drop: DropoutDraw,
    },
    Checkpoint {
        x: Tensor,
        ctx: Ctx,
    },
}

impl ResnetBlock {
    /// `ResnetBlock(in_channels, out_channels, dropout)` of spatial rank 2 or 3.
    pub fn new(
        rank: usize,
        in_channels: usize,
        out_channels: usize,
        dropout: f32,
        init: &mut Init,
    ) -> Result<ResnetBlock> {
        let conv3 = |cin, cout, init: &mut Init| -> Result<ConvUnit> {
            Ok(ConvUnit::Plain(Conv::new(
                conv_spec(rank, cin, cout, 3, 1, 1, 0)?,
                rank,
                true,
                init,
            )?))
        };
        let norm1 = GroupNorm::new(in_channels, true, init)?;
        let conv1 = conv3(in_channels, out_channels, init)?;
        let norm2 = GroupNorm::new(out_channels, true, init)?;
        let conv2 = conv3(out_channels, out_channels, init)?;
        let nin_shortcut = if in_channels != out_channels {
            let spec = conv_spec(rank, in_channels, out_channels, 1, 1, 0, 0)?;
            Some(ConvUnit::Plain(Conv::new(spec, rank, true, init)?))
        } else {
            None
        };
        Ok(ResnetBlock {
            in_channels,
            out_channels,
            norm1,
            conv1,
            norm2,
            dropout,
            conv2,
            nin_shortcut,
            recompute: false,
            saved: None,
        })
    }

    /// Inject LoRA into every convolution of the block.
    pub fn inject_lora(&mut self, r: usize, init: &mut Init) -> Result<()> {
        self.conv1.inject_lora(r, init)?;
        self.conv2.inject_lora(r, init)?;
        if let Some(s) = self.nin_shortcut.as_mut() {
            s.inject_lora(r, init)?;
        }
        Ok(())
    }

    /// The forward proper; returns `a1` for the backward.
    fn run(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, Tensor, DropoutDraw)> {
        let a1 = norm_conv_forward(&self.norm1, &mut self.conv1, x, &IDENTITY, ctx)?;
        let drop = DropoutDraw::draw(self.dropout, ctx);
        let mut y = norm_conv_forward(&self.norm2, &mut self.conv2, &a1, &drop, ctx)?;
        match self.nin_shortcut.as_mut() {
            Some(s) => add_assign(&mut y, &s.conv_forward(x, ctx)?)?,
            None => add_assign(&mut y, x)?,
        }
        Ok((y, a1, drop))
    }

    /// What the backward of a checkpointed forward needs, recomputed from its input with the
    /// same random streams (so the same activations): `a1` and the dropout draw. The block's
    /// output is not rebuilt; only LoRA convolutions of the second half replay their forward,
    /// for the low-rank state their backward reads (plain convolutions draw no randomness, so
    /// skipping them leaves the streams in step).
    fn replay(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<(Tensor, DropoutDraw)> {
        let a1 = norm_conv_forward(&self.norm1, &mut self.conv1, x, &IDENTITY, ctx)?;
        let drop = DropoutDraw::draw(self.dropout, ctx);
        if self.conv2.is_lora() {
            norm_conv_forward(&self.norm2, &mut self.conv2, &a1, &drop, ctx)?;
        }
        if let Some(s) = self.nin_shortcut.as_mut().filter(|s| s.is_lora()) {
            s.conv_forward(x, ctx)?;
        }
        Ok((a1, drop))
    }

    /// Backward of [`ResnetBlock::run`] from its saved tensors, which it consumes: each is
    /// released as soon as the rest of the backward no longer needs it (`a1` after the second
    /// half, `x` by the shortcut's weight gradient, before the last data gradient).
    fn run_backward(
        &mut self,
        x: Tensor,
        a1: Tensor,
        mask: &DropoutDraw,
        dy: &Tensor,
    ) -> Result<Tensor> {
        let da1 = norm_conv_backward(
            &mut self.norm2,
            &mut self.conv2,
            &a1,
            mask,
            Cow::Borrowed(dy),
        )?;
        drop(a1);
        let mut dx = norm_conv_backward(
            &mut self.norm1,
            &mut self.conv1,
            &x,
            &IDENTITY,
            Cow::Owned(da1),
        )?;
        match self.nin_shortcut.as_mut() {
            Some(s) => {
                let ds = s.conv_backward(Cow::Owned(x), dy, true)?.ok_or_else(|| {
                    RuntimeError::Other("nin_shortcut backward returned no dx".into())
                })?;
                add_assign(&mut dx, &ds)?;
            }
            None => add_assign(&mut dx, dy)?,
        }
        Ok(dx)
    }
}

impl Parameters for ResnetBlock {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.norm1.visit_params(&join_key(prefix, "norm1"), f);
        self.conv1.visit_params(&join_key(prefix, "conv1"), f);
        self.norm2.visit_params(&join_key(prefix, "norm2"), f);
        self.conv2.visit_params(&join_key(prefix, "conv2"), f);
        if let Some(s) = self.nin_shortcut.as_mut() {
            s.visit_params(&join_key(prefix, "nin_shortcut"), f);
        }
    }
}

impl Layer for ResnetBlock {
    fn forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_owned(x.clone(), ctx)
    }

    fn forward_owned(&mut self, x: Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.saved = None;
        if ctx.grad && self.recompute {
            let ((y, _, _), replay) = ctx.checkpointed(|c| self.run(&x, c))?;
            self.saved = Some(Saved::Checkpoint { x, ctx: replay });
            return Ok(y);
        }
        let (y, a1, drop) = self.run(&x, ctx)?;
        if ctx.grad {
            self.saved = Some(Saved::Full { x, a1, drop });
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        match self
            .saved
            .take()
            .ok_or_else(|| no_saved_state("ResnetBlock"))?
        {
            Saved::Full { x, a1, drop } => self.run_backward(x, a1, &drop, dy),
            Saved::Checkpoint { x, mut ctx } => {
                let (a1, drop) = self.replay(&x, &mut ctx)?;
                self.run_backward(x, a1, &drop, dy)
            }
        }
    }
}
