//! `AutoencoderKL` (2D and 3D): encoder → `quant_conv` → moments (mean ‖ log-variance) →
//! `z = mean + std·eps` → `post_quant_conv` → decoder, plus the latent head
//! `channel_proj(channel_ds(z) + z)` and the KL term, with an explicit backward from upstream
//! gradients of any subset of {moments, z, dec, latent, kl}.
//!
//! The pieces are also usable alone (`encode`/`decode`/`latent` with their `*_backward`), as
//! the training stages need: stage 1 runs encode → sample → decode (+ KL), stage 2 encode →
//! latent head with a frozen autoencoder.

pub mod decoder;
pub mod encoder;
pub mod latent_head;
pub mod level;

pub use decoder::Decoder;
pub use encoder::Encoder;
pub use latent_head::LatentHead;

use crate::layer::{join_key, no_saved_state, Ctx, Layer, ParamVisitor, Parameters};
use crate::layers::conv::Conv;
use crate::layers::init::Init;
use crate::lora::freeze_base_for_lora;
use crate::zoo::ModelConfig;
use medvae_runtime::ops::elementwise::{
    add_assign, concat_last, gaussian_sample_backward, gaussian_sample_forward, split_last,
    standard_normal,
};
use medvae_runtime::ops::loss::{kl_backward, kl_forward};
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::borrow::Cow;

/// How `z` is drawn from the posterior.
#[derive(Debug, Clone)]
pub enum Sampling {
    /// `z = mean` (the reference's `posterior.mode()`).
    Mode,
    /// `z = mean + std·eps` with the given `eps` (shape of `z`).
    Eps(Tensor),
    /// `z = mean + std·eps`, `eps ~ N(0, 1)` drawn from the context's random stream.
    Random,
}

/// Which optional outputs a forward computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    pub decode: bool,
    pub latent: bool,
}

#[derive(Debug, Clone)]
pub struct AeOutputs {
    /// `[N, .., 2·embed_dim]` channels-last: mean ‖ log-variance (unclamped, as the reference's
    /// `posterior.parameters`).
    pub moments: Tensor,
    pub z: Tensor,
    pub dec: Option<Tensor>,
    pub latent: Option<Tensor>,
    /// Per sample `[N]` (2D); `[N, W]` for 3D (the reference sums dims 1..3 only).
    pub kl: Tensor,
    /// The noise used (`None` for [`Sampling::Mode`]).
    pub eps: Option<Tensor>,
}

/// Upstream gradients; any subset may be given.
#[derive(Debug, Clone, Copy, Default)]
pub struct AeGrads<'a> {
    pub moments: Option<&'a Tensor>,
    pub z: Option<&'a Tensor>,
    pub dec: Option<&'a Tensor>,
    pub latent: Option<&'a Tensor>,
    pub kl: Option<&'a Tensor>,
}

#[derive(Debug, Clone, Default)]
pub struct AeInputGrads {
    pub x: Option<Tensor>,
    pub eps: Option<Tensor>,
}

#[derive(Debug)]
pub struct AutoencoderKL {
    pub config: ModelConfig,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Conv,
    pub post_quant_conv: Conv,
    pub head: Option<LatentHead>,
    /// Encoder output (quant_conv input), moments and eps of the last gradient-mode pass.
    enc_out: Option<Tensor>,
    posterior: Option<(Tensor, Option<Tensor>)>,
    post_quant_in: Option<Tensor>,
}

fn no_dx(what: &str) -> RuntimeError {
    RuntimeError::Other(format!("AutoencoderKL: {what} returned no dx"))
}

fn accumulate(acc: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    match acc {
        Some(a) => add_assign(a, &g),
        None => {
            *acc = Some(g);
            Ok(())
        }
    }
}

impl AutoencoderKL {
    /// Build the network of `cfg`. With `cfg.lora_rank` the LoRA branches are injected and the
    /// encoder/decoder frozen except for them, as the reference sets up LoRA finetuning.
    pub fn new(cfg: &ModelConfig, init: &mut Init) -> Result<AutoencoderKL> {
        cfg.validate()?;
        let rank = cfg.dims;
        let encoder = Encoder::new(cfg, init)?;
        let decoder = Decoder::new(cfg, init)?;
        let quant_conv = Conv::square(rank, 2 * cfg.z_channels, 2 * cfg.embed_dim, 1, 1, 0, init)?;
        let post_quant_conv = Conv::square(rank, cfg.embed_dim, cfg.z_channels, 1, 1, 0, init)?;
        let head = if cfg.latent_head {
            Some(LatentHead::new(rank, cfg.embed_dim, init)?)
        } else {
            None
        };
        let mut ae = AutoencoderKL {
            config: cfg.clone(),
            encoder,
            decoder,
            quant_conv,
            post_quant_conv,
            head,
            enc_out: None,
            posterior: None,
            post_quant_in: None,
        };
        if let Some(r) = cfg.lora_rank {
            ae.encoder.inject_lora(r, init)?;
            ae.decoder.inject_lora(r, init)?;
            freeze_base_for_lora(&mut ae);
        }
        Ok(ae)
    }

    /// A second network with this one's configuration and weights (on the CPU), for another
    /// device: built with zero weights, then every parameter and buffer copied in.
    pub fn replicate(&mut self) -> Result<AutoencoderKL> {
        let weights = crate::layers::state::to_state_dict(self, "replicated autoencoder")?;
        let mut copy = AutoencoderKL::new(&self.config, &mut Init::Zeros)?;
        crate::layers::state::load_state_dict(&mut copy, &weights)?
            .ensure_exact("replicated autoencoder")?;
        Ok(copy)
    }

    /// Activation checkpointing in every encoder/decoder block (3D training at 64³).
    pub fn set_recompute(&mut self, on: bool) {
        self.encoder.set_recompute(on);
        self.decoder.set_recompute(on);
    }

    /// `moments = quant_conv(encoder(x))`.
    pub fn encode(&mut self, x: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let h = self.encoder.forward(x, ctx)?;
        let moments = self.quant_conv.apply(&h)?;
        self.enc_out = if ctx.grad { Some(h) } else { None };
        Ok(moments)
    }

    /// Backward of [`AutoencoderKL::encode`]; `dx` only when `need_dx`.
    pub fn encode_backward(&mut self, dmoments: &Tensor, need_dx: bool) -> Result<Option<Tensor>> {
        let h = self
            .enc_out
            .take()
            .ok_or_else(|| no_saved_state("AutoencoderKL.encode"))?;
        let dh = self
            .quant_conv
            .grad(Cow::Owned(h), dmoments, true)?
            .ok_or_else(|| no_dx("quant_conv"))?;
        self.encoder.backward_to_input(&dh, need_dx)
    }

    /// `dec = decoder(post_quant_conv(z))`.
    pub fn decode(&mut self, z: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let zq = self.post_quant_conv.apply(z)?;
        self.post_quant_in = if ctx.grad { Some(z.clone()) } else { None };
        self.decoder.forward_owned(zq, ctx)
    }

    /// Backward of [`AutoencoderKL::decode`]: `dz`.
    pub fn decode_backward(&mut self, ddec: &Tensor) -> Result<Tensor> {
        let dzq = self.decoder.backward(ddec)?;
        let z = self
            .post_quant_in
            .take()
            .ok_or_else(|| no_saved_state("AutoencoderKL.decode"))?;
        self.post_quant_conv
            .grad(Cow::Owned(z), &dzq, true)?
            .ok_or_else(|| no_dx("post_quant_conv"))
    }

    fn head_mut(&mut self) -> Result<&mut LatentHead> {
        self.head.as_mut().ok_or_else(|| {
            RuntimeError::Other("this model has no latent head (channel_ds/channel_proj)".into())
        })
    }

    /// `latent = channel_proj(channel_ds(z) + z)`.
    pub fn latent(&mut self, z: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        self.head_mut()?.forward(z, ctx)
    }

    pub fn latent_backward(&mut self, dlatent: &Tensor) -> Result<Tensor> {
        self.head_mut()?.backward(dlatent)
    }

    /// Whether the KL keeps the last spatial axis (the reference's 3D `kl()` sums dims 1..3).
    fn kl_keeps_last_axis(&self) -> bool {
        self.config.dims == 3
    }

    pub fn kl(&self, moments: &Tensor) -> Result<Tensor> {
        kl_forward(moments, self.kl_keeps_last_axis())
    }

    /// `z` from the moments; returns the noise used.
    pub fn sample(
        &self,
        moments: &Tensor,
        sampling: Sampling,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let cz = moments.shape().last().copied().unwrap_or(0) / 2;
        let eps = match sampling {
            Sampling::Mode => return Ok((split_last(moments, cz)?.0, None)),
            Sampling::Eps(e) => e,
            Sampling::Random => {
                let mut shape = moments.shape().to_vec();
                if let Some(c) = shape.last_mut() {
                    *c = cz;
                }
                standard_normal(&shape, ctx.rng.next_stream())?.into_device(moments.device())?
            }
        };
        Ok((gaussian_sample_forward(moments, &eps)?, Some(eps)))
    }

    /// The whole model: moments, z, KL, and the decoded image / latent head as asked.
    pub fn forward(
        &mut self,
        x: &Tensor,
        sampling: Sampling,
        outputs: Outputs,
        ctx: &mut Ctx,
    ) -> Result<AeOutputs> {
        self.posterior = None;
        let moments = self.encode(x, ctx)?;
        let (z, eps) = self.sample(&moments, sampling, ctx)?;
        let kl = self.kl(&moments)?;
        let latent = if outputs.latent {
            Some(self.latent(&z, ctx)?)
        } else {
            None
        };
        let dec = if outputs.decode {
            Some(self.decode(&z, ctx)?)
        } else {
            None
        };
        if ctx.grad {
            self.posterior = Some((moments.clone(), eps.clone()));
        }
        Ok(AeOutputs {
            moments,
            z,
            dec,
            latent,
            kl,
            eps,
        })
    }

    /// Backward of [`AutoencoderKL::forward`] from upstream gradients of any of its outputs:
    /// `dx` (when `need_dx`) and `d eps`; parameter gradients are accumulated.
    pub fn backward(&mut self, grads: AeGrads, need_dx: bool) -> Result<AeInputGrads> {
        let (moments, eps) = self
            .posterior
            .take()
            .ok_or_else(|| no_saved_state("AutoencoderKL"))?;
        let mut dz = grads.z.cloned();
        if let Some(g) = grads.dec {
            accumulate(&mut dz, self.decode_backward(g)?)?;
        }
        if let Some(g) = grads.latent {
            accumulate(&mut dz, self.latent_backward(g)?)?;
        }
        let mut dm = grads.moments.cloned();
        let mut deps = None;
        if let Some(dz) = dz {
            let dmz = match &eps {
                Some(e) => {
                    let (dmz, de) = gaussian_sample_backward(&moments, e, &dz)?;
                    deps = Some(de);
                    dmz
                }
                None => concat_last(&dz, &dz.zeros_like()?)?,
            };
            accumulate(&mut dm, dmz)?;
        }
        if let Some(g) = grads.kl {
            accumulate(
                &mut dm,
                kl_backward(&moments, self.kl_keeps_last_axis(), g)?,
            )?;
        }
        let dx = match dm {
            Some(dm) => self.encode_backward(&dm, need_dx)?,
            None => None,
        };
        Ok(AeInputGrads { x: dx, eps: deps })
    }
}

impl Parameters for AutoencoderKL {
    /// PyTorch registration order: encoder, decoder, quant_conv, post_quant_conv, channel_ds,
    /// channel_proj.
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.encoder.visit_params(&join_key(prefix, "encoder"), f);
        self.decoder.visit_params(&join_key(prefix, "decoder"), f);
        self.quant_conv
            .visit_params(&join_key(prefix, "quant_conv"), f);
        self.post_quant_conv
            .visit_params(&join_key(prefix, "post_quant_conv"), f);
        if let Some(h) = self.head.as_mut() {
            h.visit_params(prefix, f);
        }
    }
}
