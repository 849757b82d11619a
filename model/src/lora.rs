//! LoRA on convolutions, as the reference injects it (`inject_trainable_lora_extended` with
//! targets `{ResnetBlock, AttnBlock}`): every convolution inside those blocks becomes
//!
//! `y = conv(x) + dropout_p(lora_up(lora_down(x))) · scale`
//!
//! with `lora_down` copying the convolution's kernel, stride and padding (no bias, `r` outputs,
//! initialised `N(0, (1/r)²)`), `lora_up` a bias-free 1×1 convolution `r → Cout` initialised to
//! zero, dropout p = 0.1 (training mode only) and scale 1. State-dict keys become
//! `<conv>.conv.{weight,bias}`, `<conv>.lora_down.weight`, `<conv>.lora_up.weight`.
//! The reference freezes the encoder and decoder and trains only the LoRA weights there.

use crate::layer::{join_key, Ctx, ParamVisitor, Parameters};
use crate::layers::conv::{conv_spec, Conv, ConvOp};
use crate::layers::dropout::DropoutDraw;
use crate::layers::init::Init;
use medvae_runtime::ops::conv::ConvSpec;
use medvae_runtime::ops::elementwise::{add_assign, scale, scaled_add_assign};
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

pub const LORA_DROPOUT: f32 = 0.1;
pub const LORA_SCALE: f32 = 1.0;

/// A convolution with a trainable low-rank branch.
#[derive(Debug, Clone)]
pub struct LoraConv {
    pub conv: Conv,
    pub lora_down: Conv,
    pub lora_up: Conv,
    pub scale: f32,
    pub dropout_p: f32,
    /// `lora_down(x)` and the dropout draw of the last gradient-mode forward.
    saved: Option<(Tensor, DropoutDraw)>,
}

impl LoraConv {
    /// Wrap `conv` with a rank-`r` branch (the reference refuses `r > min(Cin, Cout)`).
    pub fn wrap(conv: Conv, r: usize, init: &mut Init) -> Result<LoraConv> {
        let s = conv.spec;
        if r == 0 || r > s.cin.min(s.cout) {
            return Err(RuntimeError::Other(format!(
                "LoRA rank {r} must be between 1 and min(Cin, Cout) = {}",
                s.cin.min(s.cout)
            )));
        }
        let down_spec = ConvSpec { cout: r, ..s };
        let mut lora_down = Conv::new(down_spec, conv.rank, false, &mut Init::Zeros)?;
        lora_down.weight.value = init.normal(&down_spec.weight_shape(), 1.0 / r as f32)?;
        let up_spec = conv_spec(conv.rank, r, s.cout, 1, 1, 0, 0)?;
        let lora_up = Conv::new(up_spec, conv.rank, false, &mut Init::Zeros)?;
        Ok(LoraConv {
            conv,
            lora_down,
            lora_up,
            scale: LORA_SCALE,
            dropout_p: LORA_DROPOUT,
            saved: None,
        })
    }
}

impl Parameters for LoraConv {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.conv.visit_params(&join_key(prefix, "conv"), f);
        self.lora_down
            .visit_params(&join_key(prefix, "lora_down"), f);
        self.lora_up.visit_params(&join_key(prefix, "lora_up"), f);
    }
}

impl ConvOp for LoraConv {
    fn conv_forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let mut y = self.conv.apply(x)?;
        let down = self.lora_down.apply(x)?;
        let draw = DropoutDraw::draw(self.dropout_p, ctx);
        let up = draw.apply(self.lora_up.apply(&down)?)?;
        scaled_add_assign(&mut y, &up, self.scale)?;
        self.saved = if ctx.grad { Some((down, draw)) } else { None };
        Ok(y)
    }

    fn conv_backward(
        &mut self,
        x: Cow<'_, Tensor>,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        let (down, draw) = self
            .saved
            .take()
            .ok_or_else(|| crate::layer::no_saved_state("LoraConv"))?;
        // The low-rank branch first, while x is still needed; the base convolution (usually
        // frozen: no weight gradient) then takes x over and may release it before its dx.
        // d(lora_up output) = scale · mask ⊙ dy.
        let branch;
        let d_up: &Tensor = if draw.stream.is_none() && self.scale == 1.0 {
            dy
        } else {
            branch = scale(&draw.apply(dy.clone())?, self.scale)?;
            &branch
        };
        let d_down = self
            .lora_up
            .grad(Cow::Owned(down), d_up, true)?
            .ok_or_else(|| RuntimeError::Other("lora_up backward returned no dx".into()))?;
        let dx_lora = self.lora_down.grad(Cow::Borrowed(&x), &d_down, need_dx)?;
        drop(d_down);
        let mut dx = self.conv.grad(x, dy, need_dx)?;
        if let (Some(dx), Some(dl)) = (dx.as_mut(), dx_lora.as_ref()) {
            add_assign(dx, dl)?;
        }
        Ok(dx)
    }
}

/// A convolution slot of a ResnetBlock or AttnBlock: plain, or with LoRA injected.
// A few of these per block, held in place: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ConvUnit {
    Plain(Conv),
    Lora(LoraConv),
}

impl ConvUnit {
    /// Whether LoRA is injected (its forward then keeps low-rank state for the backward).
    pub fn is_lora(&self) -> bool {
        matches!(self, ConvUnit::Lora(_))
    }

    /// Replace a plain convolution by its LoRA-wrapped form (no-op if already wrapped).
    pub fn inject_lora(&mut self, r: usize, init: &mut Init) -> Result<()> {
        if let ConvUnit::Plain(c) = self {
            let conv = c.clone();
            *self = ConvUnit::Lora(LoraConv::wrap(conv, r, init)?);
        }
        Ok(())
    }

    /// The base convolution (its spec and weights).
    pub fn base(&self) -> &Conv {
        match self {
            ConvUnit::Plain(c) => c,
            ConvUnit::Lora(l) => &l.conv,
        }
    }
}

impl Parameters for ConvUnit {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        match self {
            ConvUnit::Plain(c) => c.visit_params(prefix, f),
            ConvUnit::Lora(l) => l.visit_params(prefix, f),
        }
    }
}

impl ConvOp for ConvUnit {
    fn conv_forward(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        match self {
            ConvUnit::Plain(c) => c.apply(x),
            ConvUnit::Lora(l) => l.conv_forward(x, ctx),
        }
    }
    fn conv_backward(
        &mut self,
        x: Cow<'_, Tensor>,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<Option<Tensor>> {
        match self {
            ConvUnit::Plain(c) => c.grad(x, dy, need_dx),
            ConvUnit::Lora(l) => l.conv_backward(x, dy, need_dx),
        }
    }
}

/// Whether a state-dict key is a LoRA weight.
pub fn is_lora_key(key: &str) -> bool {
    key.contains(".lora_down.") || key.contains(".lora_up.")
}

/// The reference's LoRA finetuning setup: every encoder/decoder parameter frozen except the
/// LoRA weights; everything else (quant convs, latent head) stays as it was.
pub fn freeze_base_for_lora(model: &mut dyn Parameters) {
    model.visit_params("", &mut |key, p| {
        if key.starts_with("encoder.") || key.starts_with("decoder.") {
            p.trainable = is_lora_key(key);
        }
    });
}
