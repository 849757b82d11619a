//! The benchmark workloads of `medvae-fast bench` and the criterion benches, defined once so
//! both time the same thing as `shared/bench/torch_baseline.py` does in PyTorch:
//! * `encode`: encoder + quant_conv + posterior mode + latent head, no gradients;
//! * `ae_fwd_bwd`: encode, sample, decode (and the latent head, as the reference's forward
//!   computes it), L1 against the input, backward into every parameter;
//! * `stage1_step` ([`Stage1Workload`]) and `stage2_step` ([`Stage2Workload`]): whole training
//!   steps (the latter against `scripts/torch_stage2_bench.py`).

use crate::autoencoder::{AeGrads, AutoencoderKL, Outputs, Sampling};
use crate::layer::{move_params, zero_grads, Ctx};
use crate::layers::Init;
use crate::zoo::ModelConfig;
use medvae_runtime::ops::elementwise::standard_normal;
use medvae_runtime::ops::loss::{l1_mean_backward, l1_mean_forward};
use medvae_runtime::{Device, Result, RuntimeError, Tensor};

/// A model with random weights and a fixed random input `[batch, size.., in_channels]`.
pub struct AeWorkload {
    pub model: AutoencoderKL,
    pub x: Tensor,
    seed: u64,
}

impl AeWorkload {
    pub fn new(cfg: &ModelConfig, batch: usize, size: usize, seed: u64) -> Result<AeWorkload> {
        let f = cfg.downsample_factor();
        if size == 0 || !size.is_multiple_of(f) {
            return Err(RuntimeError::Other(format!(
                "size {size} must be a positive multiple of the downsampling factor {f}"
            )));
        }
        let model = AutoencoderKL::new(cfg, &mut Init::random(seed))?;
        let mut shape = vec![batch];
        shape.extend(std::iter::repeat_n(size, cfg.dims));
        shape.push(cfg.in_channels);
        let x = standard_normal(&shape, seed ^ 0x5eed)?;
        Ok(AeWorkload { model, x, seed })
    }

    /// Move the model and the input to `device`.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        move_params(&mut self.model, device)?;
        if self.x.device() != device {
            self.x = self.x.to_device(device)?;
        }
        Ok(())
    }

    /// Encode to the latent (no gradients); returns the latent.
    pub fn encode(&mut self) -> Result<Tensor> {
        let mut ctx = Ctx::eval();
        let moments = self.model.encode(&self.x, &mut ctx)?;
        let (z, _) = self.model.sample(&moments, Sampling::Mode, &mut ctx)?;
        if self.model.config.latent_head {
            self.model.latent(&z, &mut ctx)
        } else {
            Ok(z)
        }
    }

    /// One forward + backward of the L1 reconstruction loss; returns the loss.
    pub fn fwd_bwd(&mut self) -> Result<f32> {
        self.seed = self.seed.wrapping_add(1);
        let mut ctx = Ctx::train(self.seed);
        zero_grads(&mut self.model);
        let outputs = Outputs {
            decode: true,
            latent: self.model.config.latent_head,
        };
        let out = self
            .model
            .forward(&self.x, Sampling::Random, outputs, &mut ctx)?;
        let dec = out
            .dec
            .ok_or_else(|| RuntimeError::Other("forward did not decode".into()))?;
        let loss = l1_mean_forward(&dec, &self.x)?;
        let ddec = l1_mean_backward(&dec, &self.x, 1.0)?;
        self.model.backward(
            AeGrads {
                dec: Some(&ddec),
                ..AeGrads::default()
            },
            false,
        )?;
        Ok(loss)
    }
}

/// The stage-1 training step of `torch_baseline.py`'s `stage1_step`: forward, L1 + LPIPS
/// (VGG16 widths, random weights — timing only) + KL + the PatchGAN generator term with the
/// adaptive weight, backward, Adam step. `disc_start = 0`, so every step is the full one.
pub struct Stage1Workload {
    pub ae: AeWorkload,
    pub loss: crate::losses::Stage1Loss,
    pub opt: crate::optim::Adam,
    step: u64,
}

impl Stage1Workload {
    pub fn new(cfg: &ModelConfig, batch: usize, size: usize, seed: u64) -> Result<Stage1Workload> {
        use crate::losses::{Lpips, Stage1Config, Stage1Loss, VGG16_WIDTHS};
        let ae = AeWorkload::new(cfg, batch, size, seed)?;
        let mut init = Init::random(seed ^ 0x1b);
        let lpips = Lpips::new(VGG16_WIDTHS, &mut init)?;
        let disc = crate::blocks::NLayerDiscriminator::new(cfg.out_ch, 64, 3, &mut init)?;
        let loss = Stage1Loss::new(
            Stage1Config {
                disc_start: 0,
                ..Stage1Config::default()
            },
            Some(lpips),
            disc,
        )?;
        Ok(Stage1Workload {
            ae,
            loss,
            opt: crate::optim::Adam::new(crate::optim::AdamConfig::medvae(1e-5)),
            step: 0,
        })
    }

    /// Move the autoencoder, its input, LPIPS and the discriminator to `device`.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        self.ae.to_device(device)?;
        self.loss.to_device(device)
    }

    /// One full generator step; returns the total loss.
    pub fn step(&mut self) -> Result<f32> {
        self.step += 1;
        let mut ctx = Ctx::train(self.step);
        zero_grads(&mut self.ae.model);
        let out = self.loss.generator_step(
            &mut self.ae.model,
            &self.ae.x,
            Sampling::Random,
            self.step,
            &mut ctx,
        )?;
        self.opt.step(&mut self.ae.model, 1.0)?;
        Ok(out.log.total)
    }
}

/// The stage-2 training step of `scripts/torch_stage2_bench.py`: the frozen encoder, the latent
/// head with gradient, the BiomedCLIP latent loss through a ViT-B/16 image tower (random
/// weights — timing only; the real tower has the same shapes), backward into the head, Adam.
pub struct Stage2Workload {
    pub ae: AeWorkload,
    pub loss: crate::losses::stage2::BiomedClipLatentLoss,
    pub opt: crate::optim::Adam,
    step: u64,
}

impl Stage2Workload {
    /// `cfg` must have the latent head; `tower` is the image tower's structure.
    pub fn new(
        cfg: &ModelConfig,
        tower: &crate::vit::VitConfig,
        batch: usize,
        size: usize,
        seed: u64,
    ) -> Result<Stage2Workload> {
        let mut ae = AeWorkload::new(cfg, batch, size, seed)?;
        crate::train::stage2::train_only_latent_head(&mut ae.model)?;
        let tower = crate::vit::VisionTower::new(tower, &mut Init::random(seed ^ 0x2b))?;
        Ok(Stage2Workload {
            ae,
            loss: crate::losses::stage2::BiomedClipLatentLoss::new(tower),
            opt: crate::optim::Adam::new(crate::optim::AdamConfig::medvae(1e-4)),
            step: 0,
        })
    }

    /// Move the autoencoder, its input and the tower to `device`.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        self.ae.to_device(device)?;
        move_params(&mut self.loss.tower, device)
    }

    /// One stage-2 step; returns the loss.
    pub fn step(&mut self) -> Result<f32> {
        self.step += 1;
        let mut ctx = Ctx::train(self.step);
        zero_grads(&mut self.ae.model);
        let out = crate::losses::stage2::stage2_step(
            &mut self.ae.model,
            &mut self.loss,
            &self.ae.x,
            Sampling::Random,
            &mut ctx,
        )?;
        self.opt.step(&mut self.ae.model, 1.0)?;
        Ok(out.value.loss)
    }
}
