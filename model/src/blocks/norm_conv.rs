//! `conv(dropout(silu(norm(x))))`, the pattern of both halves of a ResnetBlock and of the
//! encoder/decoder output heads. The normalised activation is not kept: the backward
//! recomputes it from `x` (one memory-bound GroupNorm pass) instead of holding a full
//! activation per use.

use crate::layer::Ctx;
use crate::layers::conv::ConvOp;
use crate::layers::dropout::DropoutDraw;
use crate::layers::group_norm::GroupNorm;
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

/// No dropout.
pub const IDENTITY: DropoutDraw = DropoutDraw {
    p: 0.0,
    stream: None,
};

/// `conv(mask(norm(x)))` (`norm` is fused with SiLU where the reference applies one).
pub fn norm_conv_forward<C: ConvOp>(
    norm: &GroupNorm,
    conv: &mut C,
    x: &Tensor,
    mask: &DropoutDraw,
    ctx: &mut Ctx,
) -> Result<Tensor> {
    let (h, _) = norm.apply(x)?;
    let h = mask.apply(h)?;
    conv.conv_forward(&h, ctx)
}

/// Backward of [`norm_conv_forward`] from its input `x` (and the same mask draw).
///
/// Memory: the recomputed activation goes to the convolution's backward, which releases it
/// before allocating its data gradient; an owned `dy` is released after the convolution; the
/// norm's backward overwrites that data gradient with `dx`. The peak holds `x`, `dy` and one
/// activation-sized buffer besides.
pub fn norm_conv_backward<C: ConvOp>(
    norm: &mut GroupNorm,
    conv: &mut C,
    x: &Tensor,
    mask: &DropoutDraw,
    dy: Cow<'_, Tensor>,
) -> Result<Tensor> {
    let (h, stats) = norm.apply(x)?;
    let h = mask.apply(h)?;
    let dh = conv
        .conv_backward(Cow::Owned(h), &dy, true)?
        .ok_or_else(|| RuntimeError::Other("norm → conv: conv backward returned no dx".into()))?;
    drop(dy);
    // Dropout's backward is the same mask product as its forward.
    let dh = mask.apply(dh)?;
    norm.grad(x, &stats, Cow::Owned(dh))
}
