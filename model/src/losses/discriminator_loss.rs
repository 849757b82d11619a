//! The discriminator step of stage 1 (the reference's `optimizer_idx = 1`): hinge loss
//!
//! ```text
//! loss = ½ (mean relu(1 − D(real)) + mean relu(1 + D(fake)))
//! ```
//! with `D` called on the real images first, then on the (detached) reconstructions, both in
//! training mode: each call normalises with its own batch statistics and updates the BatchNorm
//! running statistics, in that order. Since the two halves of the loss are separate, each
//! call's backward runs right after its forward (the discriminator keeps the state of one
//! pass), and parameter gradients accumulate over the two.

use crate::blocks::NLayerDiscriminator;
use crate::layer::{Ctx, Layer};
use medvae_runtime::ops::loss::{hinge_half_backward, hinge_half_forward};
use medvae_runtime::{Result, RuntimeError, Tensor};

/// The values of one discriminator step.
#[derive(Debug, Clone)]
pub struct DiscStep {
    pub loss: f32,
    pub logits_real: Tensor,
    pub logits_fake: Tensor,
}

/// `(mean relu(1 + sign·logits), ∂/∂logits of ½·dloss·that mean)`: the real half has
/// `sign = −1`, the fake half `sign = +1`. At the hinge (`1 + sign·x = 0`) the gradient is 0,
/// as PyTorch's relu backward. Runs on the logits' device.
fn hinge_half(logits: &Tensor, sign: f32, dloss: f32) -> Result<(f64, Tensor)> {
    let n = logits.numel();
    if n == 0 {
        return Err(RuntimeError::shape(
            "hinge",
            "the discriminator gave no logits",
        ));
    }
    let sum = hinge_half_forward(logits, sign)?;
    let g = hinge_half_backward(logits, sign, 0.5 * dloss / n as f32)?;
    Ok((sum / n as f64, g))
}

/// One discriminator step: `weight ·` the hinge loss (the reference's `disc_factor`) and its
/// parameter gradients, accumulated into the discriminator's trainable parameters. `ctx` should
/// be a training context (the reference trains D with batch statistics).
pub fn discriminator_step(
    disc: &mut NLayerDiscriminator,
    real: &Tensor,
    fake: &Tensor,
    weight: f32,
    ctx: &mut Ctx,
) -> Result<DiscStep> {
    let mut grad_ctx = ctx.clone();
    grad_ctx.grad = true;
    let logits_real = disc.forward(real, &mut grad_ctx)?;
    let (loss_real, g_real) = hinge_half(&logits_real, -1.0, weight)?;
    disc.backward(&g_real)?;
    let logits_fake = disc.forward(fake, &mut grad_ctx)?;
    let (loss_fake, g_fake) = hinge_half(&logits_fake, 1.0, weight)?;
    disc.backward(&g_fake)?;
    ctx.rng = grad_ctx.rng;
    Ok(DiscStep {
        loss: (0.5 * weight as f64 * (loss_real + loss_fake)) as f32,
        logits_real,
        logits_fake,
    })
}
