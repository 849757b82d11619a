//! The stage-1 generator loss (the reference's `LPIPSWithDiscriminator`, `optimizer_idx = 0`)
//! and its gradient, in one call:
//!
//! ```text
//! rec_loss = |x − rec| + perceptual_weight · LPIPS(x, rec)        (per pixel; LPIPS per sample)
//! nll      = Σ (rec_loss / exp(logvar) + logvar) / N
//! kl       = Σ KL(posterior) / N
//! g_loss   = −mean D(rec)                                          (D in training mode)
//! d_weight = disc_weight · clamp(‖∂nll/∂W‖ / (‖∂g_loss/∂W‖ + 1e-4), 0, 1e4)
//!            with W = decoder.conv_out.weight, detached
//! loss     = nll + kl_weight · kl + d_weight · disc_factor · g_loss
//! ```
//! Before `disc_start` the adversarial term is 0. The discriminator and its adaptive weight are
//! then skipped altogether (no D forward; `g_loss` and `d_weight` log as 0): the reference still
//! runs D there, which only moves D's BatchNorm running statistics and the logged numbers.
//!
//! # One decoder backward
//! Both `nll` and `g_loss` reach the parameters only through `rec`. So the step forms
//! `∂nll/∂rec` (L1 + LPIPS) and `∂g_loss/∂rec` (through the frozen D), turns each into the last
//! convolution's weight gradient with that convolution's input (two small weight-gradient
//! GEMMs, no network backward), and back-propagates the weighted sum through the autoencoder
//! once. The LPIPS backward runs right after its forward (its upstream gradient depends only on
//! `logvar` and the shape), so its activations are freed before D runs.

use super::discriminator_loss::{discriminator_step, DiscStep};
use super::lpips::{Lpips, Need, WEIGHTS_HELP};
use super::lpips3d::{cube_slices, cube_slices_backward, slices_backward, slices_forward};
use crate::autoencoder::{AeGrads, AutoencoderKL, Outputs, Sampling};
use crate::blocks::NLayerDiscriminator;
use crate::layer::{join_key, move_params, visit_one, Ctx, Layer, Param, ParamVisitor, Parameters};
use medvae_runtime::ops::elementwise::scaled_add_assign;
use medvae_runtime::ops::loss::l1_mean_backward;
use medvae_runtime::ops::reduce::{abs_diff_sum, full, sum, sum_squares};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};

/// Weights of the stage-1 loss (the reference's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Stage1Config {
    pub kl_weight: f32,
    pub perceptual_weight: f32,
    pub disc_weight: f32,
    pub disc_factor: f32,
    /// First global step with the adversarial term.
    pub disc_start: u64,
    /// Initial `logvar`.
    pub logvar_init: f32,
    /// Whether `logvar` gets a gradient (the reference declares it a parameter).
    pub learn_logvar: bool,
}

impl Default for Stage1Config {
    fn default() -> Self {
        Stage1Config {
            kl_weight: 1e-6,
            perceptual_weight: 1.0,
            disc_weight: 0.5,
            disc_factor: 1.0,
            disc_start: 3125,
            logvar_init: 0.0,
            learn_logvar: true,
        }
    }
}

/// The logged values of one generator step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stage1Log {
    /// The loss that was differentiated.
    pub total: f32,
    pub nll: f32,
    /// Mean of `rec_loss` over pixels.
    pub rec: f32,
    /// `Σ KL / N` (unweighted).
    pub kl: f32,
    pub d_weight: f32,
    pub g_loss: f32,
}

#[derive(Debug)]
pub struct GeneratorStep {
    pub log: Stage1Log,
    pub rec: Tensor,
}

/// The stage-1 loss: frozen LPIPS, the PatchGAN discriminator and `logvar`.
#[derive(Debug)]
pub struct Stage1Loss {
    pub config: Stage1Config,
    /// `None` only with `perceptual_weight = 0`.
    pub lpips: Option<Lpips>,
    pub disc: NLayerDiscriminator,
    /// Scalar `logvar`.
    pub logvar: Param,
}

/// The value of a one-element tensor (read back from a device if it lives on one).
fn scalar(t: &Tensor, what: &str) -> Result<f32> {
    match t.to_f32_vec().as_slice() {
        &[v] => Ok(v),
        v => Err(RuntimeError::shape(
            what,
            format!("expected a scalar, got {} values", v.len()),
        )),
    }
}

fn norm(t: &Tensor) -> Result<f64> {
    Ok(sum_squares(t)?.sqrt())
}

/// Run `f` with every parameter of `m` frozen, then restore the flags (also on error).
fn with_frozen<M: Parameters, R>(m: &mut M, f: impl FnOnce(&mut M) -> R) -> R {
    let mut flags = Vec::new();
    m.visit_params("", &mut |_, p| {
        flags.push(p.trainable);
        p.trainable = false;
    });
    let r = f(m);
    let mut it = flags.into_iter();
    m.visit_params("", &mut |_, p| {
        p.trainable = it.next().unwrap_or(p.trainable)
    });
    r
}

/// The reference's reconstruction NLL with a learned log-variance, from the batch sums:
/// `rec_sum = Σ|x − rec| + w_p · (voxels per sample) · Σ_samples LPIPS` and
/// `nll = (rec_sum · e^(−logvar) + logvar · numel) / N`. Training and validation share it.
pub(crate) struct Nll {
    pub rec_sum: f64,
    pub nll: f64,
}

impl Nll {
    pub(crate) fn of(
        abs_sum: f64,
        lpips_sum: f64,
        perceptual_weight: f32,
        logvar: f64,
        numel: f64,
        n: f64,
    ) -> Nll {
        let rec_sum = abs_sum + perceptual_weight as f64 * (numel / n) * lpips_sum;
        Nll {
            rec_sum,
            nll: rec_sum * (-logvar).exp() / n + logvar * numel / n,
        }
    }
}

impl Stage1Loss {
    /// Refuses `perceptual_weight > 0` without LPIPS weights (see [`WEIGHTS_HELP`]).
    pub fn new(
        config: Stage1Config,
        lpips: Option<Lpips>,
        disc: NLayerDiscriminator,
    ) -> Result<Stage1Loss> {
        if config.perceptual_weight > 0.0 && lpips.is_none() {
            return Err(RuntimeError::Other(format!(
                "perceptual_weight = {} but no LPIPS weights were given. {WEIGHTS_HELP}",
                config.perceptual_weight
            )));
        }
        let mut logvar = Param::plain("logvar", Tensor::from_vec(&[], vec![config.logvar_init])?);
        logvar.trainable = config.learn_logvar;
        Ok(Stage1Loss {
            config,
            lpips,
            disc,
            logvar,
        })
    }

    /// Move LPIPS and the discriminator to `device`. `logvar` stays on the host: it is one
    /// value that every step reads and whose gradient is formed on the host.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if let Some(lp) = self.lpips.as_mut() {
            move_params(lp, device)?;
        }
        move_params(&mut self.disc, device)
    }

    /// Whether the adversarial term is on at `global_step`.
    pub fn adversarial_active(&self, global_step: u64) -> bool {
        global_step >= self.config.disc_start && self.config.disc_factor > 0.0
    }

    /// One generator step on `x` (`[N, H, W, C]`): forward through `ae`, the loss, and the
    /// backward, accumulating gradients into `ae`'s trainable parameters and `logvar`. The
    /// discriminator is frozen for the step but, in a training context, updates its BatchNorm
    /// running statistics as the reference's does.
    pub fn generator_step(
        &mut self,
        ae: &mut AutoencoderKL,
        x: &Tensor,
        sampling: Sampling,
        global_step: u64,
        ctx: &mut Ctx,
    ) -> Result<GeneratorStep> {
        const OP: &str = "stage-1 loss";
        if x.rank() != 4 && x.rank() != 5 {
            return Err(RuntimeError::shape(
                OP,
                format!(
                    "the stage-1 generator loss takes 2D batches [N, H, W, C] or 3D batches \
                     [N, D, H, W, C], got {:?}",
                    x.shape()
                ),
            ));
        }
        let volumes = x.rank() == 5;
        ctx.grad = true;
        let cfg = self.config.clone();
        let outputs = Outputs {
            decode: true,
            latent: false,
        };
        let fwd = ae.forward(x, sampling, outputs, ctx)?;
        let rec = fwd
            .dec
            .ok_or_else(|| RuntimeError::Other(format!("{OP}: the autoencoder gave no image")))?;
        rec.expect_shape(OP, "reconstruction", x.shape())?;
        let n = x.shape()[0] as f64;
        let numel = x.numel() as f64;
        let per_sample = numel / n;
        let lv = scalar(&self.logvar.value, "logvar")? as f64;
        let inv_var = (-lv).exp();

        // ∂nll/∂rec: L1, then LPIPS (input x, target rec, as the reference calls it).
        // Σ|x − rec| in f64 (the op's mean rounds to f32, a visible error on a sum of 10⁵).
        let abs_sum = abs_diff_sum(&rec, x)?;
        let mut drec = l1_mean_backward(&rec, x, (numel * inv_var / n) as f32)?;
        let mut p_sum = 0.0f64;
        if cfg.perceptual_weight > 0.0 {
            let lp = self
                .lpips
                .as_ref()
                .ok_or_else(|| RuntimeError::Other(format!("{OP}: {WEIGHTS_HELP}")))?;
            let no_state = || RuntimeError::Other(format!("{OP}: no LPIPS state"));
            // Each sample's distance is broadcast over its voxels of rec_loss; for volumes the
            // distance is the mean over every slice of the three axes (and of the batch).
            let dp = (cfg.perceptual_weight as f64 * per_sample * inv_var / n) as f32;
            let g = if volumes {
                let (p, state) = slices_forward(lp, x, &rec, Need::TARGET)?;
                p_sum = p as f64 * n;
                slices_backward(lp, state.ok_or_else(no_state)?, dp * n as f32)?
            } else {
                let (p, state) = lp.distance(x, &rec, Need::TARGET)?;
                p_sum = sum(&p)?;
                lp.distance_backward(state.ok_or_else(no_state)?, &vec![dp; x.shape()[0]])?
            };
            if let Some(g) = g.target {
                scaled_add_assign(&mut drec, &g, 1.0)?;
            }
        }
        let Nll { rec_sum, nll } = Nll::of(abs_sum, p_sum, cfg.perceptual_weight, lv, numel, n);

        // Adversarial term and its adaptive weight.
        let (mut g_loss, mut d_weight) = (0.0f64, 0.0f64);
        if self.adversarial_active(global_step) {
            let mut dctx = ctx.clone();
            // Volumes: the 2D discriminator over the slices of all three axes at once.
            let d_in = if volumes {
                cube_slices(&rec)?
            } else {
                rec.clone()
            };
            let (logits, drec_adv) = with_frozen(&mut self.disc, |d| -> Result<_> {
                let logits = d.forward(&d_in, &mut dctx)?;
                let len = logits.numel() as f32;
                let g = full(logits.shape(), -1.0 / len, logits.device())?;
                let dx = d.backward(&g)?;
                Ok((logits, dx))
            })?;
            drop(d_in);
            let drec_adv = if volumes {
                cube_slices_backward(rec.shape(), &drec_adv)?
            } else {
                drec_adv
            };
            ctx.rng = dctx.rng;
            g_loss = -sum(&logits)? / logits.numel() as f64;
            let (last_in, conv_out) = ae.decoder.last_layer_input()?;
            let gn = norm(&conv_out.weight_grad_of(&last_in, &drec)?)?;
            let gg = norm(&conv_out.weight_grad_of(&last_in, &drec_adv)?)?;
            d_weight = cfg.disc_weight as f64 * (gn / (gg + 1e-4)).clamp(0.0, 1e4);
            scaled_add_assign(
                &mut drec,
                &drec_adv,
                (d_weight * cfg.disc_factor as f64) as f32,
            )?;
        }

        // KL: Σ KL / N.
        let kl = sum(&fwd.kl)? / n;
        let dkl = full(
            fwd.kl.shape(),
            (cfg.kl_weight as f64 / n) as f32,
            fwd.kl.device(),
        )?;
        ae.backward(
            AeGrads {
                dec: Some(&drec),
                kl: Some(&dkl),
                ..AeGrads::default()
            },
            false,
        )?;
        if let Some(g) = self.logvar.grad_slot()? {
            let d = -rec_sum * inv_var / n + numel / n;
            g.f32s_mut(OP)?[0] += d as f32;
        }
        let total = nll + cfg.kl_weight as f64 * kl + d_weight * cfg.disc_factor as f64 * g_loss;
        Ok(GeneratorStep {
            log: Stage1Log {
                total: total as f32,
                nll: nll as f32,
                rec: (rec_sum / numel) as f32,
                kl: kl as f32,
                d_weight: d_weight as f32,
                g_loss: g_loss as f32,
            },
            rec,
        })
    }

    /// One discriminator step on real images and (detached) reconstructions, scaled by
    /// `disc_factor`; `None` before `disc_start` (the reference trains D only from then on).
    pub fn discriminator_step(
        &mut self,
        real: &Tensor,
        fake: &Tensor,
        global_step: u64,
        ctx: &mut Ctx,
    ) -> Result<Option<DiscStep>> {
        if !self.adversarial_active(global_step) {
            return Ok(None);
        }
        if real.rank() == 5 {
            let (real, fake) = (cube_slices(real)?, cube_slices(fake)?);
            return discriminator_step(&mut self.disc, &real, &fake, self.config.disc_factor, ctx)
                .map(Some);
        }
        discriminator_step(&mut self.disc, real, fake, self.config.disc_factor, ctx).map(Some)
    }
}

impl Parameters for Stage1Loss {
    /// Keys as the golden stage-1 case names them: `logvar`, `lpips.*`, `disc.*`.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        visit_one(prefix, &mut self.logvar, f);
        if let Some(lp) = self.lpips.as_mut() {
            lp.visit_params(&join_key(prefix, "lpips"), f);
        }
        self.disc.visit_params(&join_key(prefix, "disc"), f);
    }
}
