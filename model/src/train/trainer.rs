//! The stage-1 finetuning loop of one batch at a time, as the reference's `training_epoch`:
//! * before `disc_start` every batch is a generator step;
//! * from `disc_start` on, batches alternate by their index in the epoch: even = generator
//!   step, odd = discriminator step (the reconstruction made without gradients);
//! * two Adam optimizers (autoencoder + logvar; discriminator), betas (0.5, 0.9),
//!   lr = accumulation × batch × base_learning_rate;
//! * gradients of `gradient_accumulation_steps` steps of a kind are summed, averaged and then
//!   applied. (The reference passes the accumulation plugin to accelerate but never enters
//!   `accelerator.accumulate()`, so there the loss is divided by the steps and the optimizer
//!   still steps every batch; this engine accumulates for real.)
//!
//! Every random draw of a step comes from a stream seeded by `(seed, global_step)`, so a
//! resumed run continues exactly as an uninterrupted one.

use super::config::TrainConfig;
use super::metrics::{Mean, ReconstructionMetrics};
use super::stage2;
use crate::autoencoder::{AutoencoderKL, Outputs, Sampling};
use crate::blocks::NLayerDiscriminator;
use crate::layer::{
    move_params, set_trainable, visit_one, zero_grads, Ctx, Param, ParamVisitor, Parameters,
};
use crate::layers::state::{load_state_dict, param_shapes};
use crate::layers::Init;
use crate::lora::freeze_base_for_lora;
use crate::losses::lpips::{Lpips, Need};
use crate::losses::lpips3d::slices_forward;
use crate::losses::stage1::Nll;
use crate::losses::stage2::BiomedClipLatentLoss;
use crate::losses::{Stage1Config, Stage1Loss};
use crate::optim::{Adam, AdamConfig};
use crate::quality::batch_ssim;
use crate::zoo::ModelConfig;
use medvae_runtime::checkpoint::load_checkpoint;
use medvae_runtime::ops::loss::l1_mean_forward;
use medvae_runtime::{Device, Result, RuntimeError, Tensor};

/// What one training batch did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum StepKind {
    Generator,
    Discriminator,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepLog {
    pub kind: StepKind,
    pub global_step: u64,
    /// The generator's total loss (last generator step's, on discriminator steps).
    pub ae_loss: f32,
    pub rec_loss: f32,
    pub nll: f32,
    pub kl: f32,
    pub d_weight: f32,
    pub g_loss: f32,
    /// The discriminator's hinge loss (0 before disc_start).
    pub disc_loss: f32,
}

/// Validation of one epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationLog {
    pub ae_loss: f64,
    pub rec_loss: f64,
    pub mse: f64,
    pub psnr: f64,
    /// Mean SSIM over the validation samples (`quality::batch_ssim`: torchmetrics' SSIM,
    /// reconstruction clamped to [-1, 1]); NaN when every sample is below 6 pixels a side.
    pub ssim: f64,
    pub batches: usize,
}

pub struct Trainer {
    pub config: TrainConfig,
    /// Where the networks and each batch live (`config.device`).
    pub device: Device,
    pub model_config: ModelConfig,
    pub ae: AutoencoderKL,
    pub loss: Stage1Loss,
    /// Stage 2: the BiomedCLIP latent loss (then the only trained loss).
    pub bc_loss: Option<BiomedClipLatentLoss>,
    pub opt_ae: Adam,
    pub opt_disc: Adam,
    /// Batches trained so far (the reference's `global_step`).
    pub global_step: u64,
    /// The epoch in progress and the next batch index in it.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    /// Best validation rec loss so far.
    pub best_val: Option<f64>,
    /// Generator / discriminator steps whose gradients wait for the accumulation to fill.
    pub(super) gen_accumulated: usize,
    pub(super) disc_accumulated: usize,
    /// The last generator step's log (discriminator steps report it too).
    pub(super) last_gen: StepLog,
    /// This replica's place in data-parallel training (0 alone): it picks the random stream,
    /// so that replicas draw different noise for their different images.
    pub rank: usize,
    /// How many replicas share each global batch (set by `DataParallel`; checkpoints record
    /// it, since `batch_in_epoch` counts global batches).
    pub replicas: usize,
}

/// The optimizer step a batch completes (when the gradient accumulation is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The autoencoder's optimizer (and `logvar`'s, in stage 1).
    Autoencoder,
    Discriminator,
}

/// `logvar` as a parameter set of its own, so the autoencoder's optimizer updates it too
/// (the reference appends it to `ae_params`).
struct LogvarParams<'a>(&'a mut Param);

impl Parameters for LogvarParams<'_> {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        visit_one(prefix, self.0, f);
    }
}

/// The random stream of one step of one replica: a hash of the run seed, the step and the
/// rank (rank 0 gets the stream a run without data parallelism has).
fn step_seed(seed: u64, step: u64, rank: usize) -> u64 {
    let rank_mix = (rank as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    let mut z = seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03 ^ rank_mix;
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^ (z >> 33)
}

impl Trainer {
    /// Build the networks, load the starting weights and set which parameters train.
    pub fn new(config: TrainConfig) -> Result<Trainer> {
        config.validate()?;
        let device: Device = config.device.parse()?;
        let mut init = Init::random(config.seed);
        let (start, start_path) = if config.stage2 {
            let (path, state) = stage2::stage1_weights(&config)?;
            (Some(state), Some(path))
        } else {
            match &config.weights {
                Some(path) => (
                    Some(load_checkpoint(path).map_err(|e| RuntimeError::Other(e.to_string()))?),
                    Some(path.clone()),
                ),
                None => (None, None),
            }
        };
        let bc_loss = if config.stage2 {
            Some(stage2::load_loss(&config)?)
        } else {
            None
        };
        let model_config = match &start {
            Some(state) => ModelConfig::from_state_dict_shapes(&state.shapes())?,
            None => config.model_config()?,
        };
        if model_config.dims == 3 && config.stage2 {
            return Err(RuntimeError::Other(
                "stage 2 (the BiomedCLIP latent loss) is 2D only, as in the reference".into(),
            ));
        }
        let mut ae = AutoencoderKL::new(&model_config, &mut init)?;
        if let (Some(state), Some(path)) = (&start, &start_path) {
            let report = load_state_dict(&mut ae, state)?;
            report.ensure_exact(&path.display().to_string())?;
            state
                .check_finite()
                .map_err(|e| RuntimeError::Other(e.to_string()))?;
        }
        ae.set_recompute(config.activation_checkpointing);
        // Stage 1 trains encoder, decoder and the quant convs (the reference's ae_params); the
        // latent head belongs to stage 2. LoRA models train only their LoRA weights.
        set_trainable(&mut ae, true);
        ae.visit_params("", &mut |key, p| {
            if key.starts_with("channel_ds.") || key.starts_with("channel_proj.") {
                p.trainable = false;
            }
        });
        if model_config.lora_rank.is_some() {
            freeze_base_for_lora(&mut ae);
        }
        if config.stage2 {
            stage2::train_only_latent_head(&mut ae)?;
        }
        let c = &config.criterion;
        // Stage 2 has no reconstruction loss to train, so no LPIPS (validation reports L1).
        let lpips = if c.perceptual_weight > 0.0 && !config.stage2 {
            Some(Lpips::require(
                c.lpips_vgg_weights.as_deref(),
                c.lpips_lin_weights.as_deref(),
            )?)
        } else {
            None
        };
        let disc =
            NLayerDiscriminator::new(model_config.out_ch, c.disc_ndf, c.disc_layers, &mut init)?;
        let loss = Stage1Loss::new(
            Stage1Config {
                kl_weight: c.kl_weight,
                perceptual_weight: if config.stage2 {
                    0.0
                } else {
                    c.perceptual_weight
                },
                disc_weight: c.disc_weight,
                disc_factor: c.disc_factor,
                disc_start: c.disc_start,
                logvar_init: c.logvar_init,
                learn_logvar: c.learn_logvar,
            },
            lpips,
            disc,
        )?;
        let lr = config.learning_rate();
        let mut trainer = Trainer {
            device,
            model_config,
            ae,
            loss,
            bc_loss,
            opt_ae: Adam::new(AdamConfig::medvae(lr)),
            opt_disc: Adam::new(AdamConfig::medvae(lr)),
            global_step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best_val: None,
            gen_accumulated: 0,
            disc_accumulated: 0,
            last_gen: StepLog {
                kind: StepKind::Generator,
                global_step: 0,
                ae_loss: f32::NAN,
                rec_loss: f32::NAN,
                nll: f32::NAN,
                kl: f32::NAN,
                d_weight: 0.0,
                g_loss: 0.0,
                disc_loss: 0.0,
            },
            config,
            rank: 0,
            replicas: 1,
        };
        trainer.place()?;
        Ok(trainer)
    }

    /// Check the device, set the CUDA precision, and move the networks there (again after a
    /// resume, which loads host tensors). A no-op on the CPU.
    pub fn place(&mut self) -> Result<()> {
        if self.device.is_cpu() {
            return Ok(());
        }
        self.device.ensure_available().map_err(|e| {
            RuntimeError::Other(format!(
                "device `{}` (set device: cpu to train on the CPU): {e}",
                self.config.device
            ))
        })?;
        medvae_runtime::set_cuda_precision(&self.config.precision)?;
        move_params(&mut self.ae, self.device)?;
        if let Some(bc) = self.bc_loss.as_mut() {
            move_params(&mut bc.tower, self.device)?;
        }
        self.loss.to_device(self.device)
    }

    /// `(all, trainable)` parameter counts of the autoencoder.
    pub fn parameter_counts(&mut self) -> (usize, usize) {
        crate::layer::count_params(&mut self.ae)
    }

    /// Keys and shapes of the autoencoder (for checkpoints).
    pub fn model_keys(&mut self) -> Vec<(String, Vec<usize>)> {
        param_shapes(&mut self.ae)
    }

    /// Train on one batch `[N, H, W, C]`; `index` is its position in the epoch.
    pub fn train_batch(&mut self, x: &Tensor, index: usize) -> Result<StepLog> {
        let (log, update) = self.accumulate_batch(x, index)?;
        if let Some(update) = update {
            self.apply_update(update)?;
        }
        Ok(log)
    }

    /// [`Trainer::train_batch`] up to the optimizer step: forward, backward, gradients added
    /// to the accumulation. Returns the step that is now due, if the accumulation is full;
    /// [`Trainer::apply_update`] makes it (data-parallel training averages the replicas'
    /// gradients in between).
    pub fn accumulate_batch(
        &mut self,
        x: &Tensor,
        index: usize,
    ) -> Result<(StepLog, Option<Update>)> {
        let x = &*x.on_device(self.device)?;
        let step = self.global_step;
        let mut ctx = Ctx::train(step_seed(self.config.seed, step, self.rank));
        if self.bc_loss.is_some() {
            return self.train_stage2_batch(x, index, &mut ctx);
        }
        let adversarial = self.loss.adversarial_active(step);
        let accum = self.config.gradient_accumulation_steps;
        let mut update = None;
        let log = if !adversarial || index.is_multiple_of(2) {
            if self.gen_accumulated == 0 {
                zero_grads(&mut self.ae);
                self.loss.logvar.zero_grad();
            }
            let out =
                self.loss
                    .generator_step(&mut self.ae, x, Sampling::Random, step, &mut ctx)?;
            let l = out.log;
            if !l.total.is_finite() {
                return Err(RuntimeError::Other(format!(
                    "the generator loss is {} at step {step} (nll {}, kl {}, g_loss {}): training \
                     diverged or the data holds NaN/Inf; lower base_learning_rate or check the data",
                    l.total, l.nll, l.kl, l.g_loss
                )));
            }
            self.gen_accumulated += 1;
            if self.gen_accumulated == accum {
                update = Some(Update::Autoencoder);
                self.gen_accumulated = 0;
            }
            self.last_gen = StepLog {
                kind: StepKind::Generator,
                global_step: step,
                ae_loss: l.total,
                rec_loss: l.rec,
                nll: l.nll,
                kl: l.kl,
                d_weight: l.d_weight,
                g_loss: l.g_loss,
                disc_loss: self.last_gen.disc_loss,
            };
            self.last_gen
        } else {
            if self.disc_accumulated == 0 {
                zero_grads(&mut self.loss.disc);
            }
            let mut fwd_ctx = Ctx {
                grad: false,
                ..ctx.clone()
            };
            let outputs = Outputs {
                decode: true,
                latent: false,
            };
            let fake = self
                .ae
                .forward(x, Sampling::Random, outputs, &mut fwd_ctx)?
                .dec
                .ok_or_else(|| RuntimeError::Other("the autoencoder gave no image".into()))?;
            ctx.rng = fwd_ctx.rng;
            let d = self
                .loss
                .discriminator_step(x, &fake, step, &mut ctx)?
                .ok_or_else(|| {
                    RuntimeError::Other("discriminator step before disc_start".into())
                })?;
            if !d.loss.is_finite() {
                return Err(RuntimeError::Other(format!(
                    "the discriminator loss is {} at step {step}: training diverged",
                    d.loss
                )));
            }
            self.disc_accumulated += 1;
            if self.disc_accumulated == accum {
                update = Some(Update::Discriminator);
                self.disc_accumulated = 0;
            }
            StepLog {
                kind: StepKind::Discriminator,
                global_step: step,
                disc_loss: d.loss,
                ..self.last_gen
            }
        };
        self.last_gen.disc_loss = log.disc_loss;
        self.global_step += 1;
        self.batch_in_epoch = index + 1;
        Ok((log, update))
    }

    /// Make the optimizer step `update` with the accumulated gradients (scaled by
    /// 1 / accumulation steps).
    pub fn apply_update(&mut self, update: Update) -> Result<()> {
        let scale = 1.0 / self.config.gradient_accumulation_steps as f32;
        match update {
            Update::Autoencoder => {
                self.opt_ae.step(&mut self.ae, scale)?;
                if self.bc_loss.is_none() {
                    self.opt_ae
                        .step(&mut LogvarParams(&mut self.loss.logvar), scale)?;
                }
                Ok(())
            }
            Update::Discriminator => self.opt_disc.step(&mut self.loss.disc, scale),
        }
    }

    /// Visit the parameters whose gradients `update` reads, in a fixed order (the same on
    /// every replica of one configuration).
    pub fn visit_update_params(&mut self, update: Update, f: &mut ParamVisitor) {
        match update {
            Update::Autoencoder => {
                self.ae.visit_params("", f);
                if self.bc_loss.is_none() {
                    LogvarParams(&mut self.loss.logvar).visit_params("loss.logvar", f);
                }
            }
            Update::Discriminator => self.loss.disc.visit_params("loss.discriminator", f),
        }
    }

    fn train_stage2_batch(
        &mut self,
        x: &Tensor,
        index: usize,
        ctx: &mut Ctx,
    ) -> Result<(StepLog, Option<Update>)> {
        let step = self.global_step;
        let accum = self.config.gradient_accumulation_steps;
        if self.gen_accumulated == 0 {
            zero_grads(&mut self.ae);
        }
        let loss = self
            .bc_loss
            .as_mut()
            .ok_or_else(|| RuntimeError::Other("stage 2 without its loss".into()))?;
        let value = stage2::step(&mut self.ae, loss, x, ctx)?;
        if !value.is_finite() {
            return Err(RuntimeError::Other(format!(
                "the stage-2 loss is {value} at step {step}: training diverged or the data \
                 holds NaN/Inf"
            )));
        }
        self.gen_accumulated += 1;
        let update = (self.gen_accumulated == accum).then_some(Update::Autoencoder);
        if update.is_some() {
            self.gen_accumulated = 0;
        }
        self.last_gen = StepLog {
            kind: StepKind::Generator,
            global_step: step,
            ae_loss: value,
            rec_loss: 0.0,
            nll: 0.0,
            kl: 0.0,
            d_weight: 0.0,
            g_loss: 0.0,
            disc_loss: 0.0,
        };
        self.global_step += 1;
        self.batch_in_epoch = index + 1;
        Ok((self.last_gen, update))
    }

    /// Start the next epoch's batch count.
    pub fn end_epoch(&mut self) {
        self.epoch += 1;
        self.batch_in_epoch = 0;
    }

    /// Validation over `batches`: the generator loss without the adversarial term (the
    /// reference's adaptive weight cannot be formed without gradients and is 0 there), the
    /// reconstruction loss, MSE/PSNR and SSIM. Sampling uses a fixed stream so epochs compare.
    pub fn validate(
        &mut self,
        batches: impl IntoIterator<Item = Result<Tensor>>,
    ) -> Result<ValidationLog> {
        let mut ae_loss = Mean::default();
        let mut rec_loss = Mean::default();
        let mut metrics = ReconstructionMetrics::default();
        let mut ssim = Mean::default();
        let c = self.loss.config.clone();
        let lv = self
            .loss
            .logvar
            .value
            .to_f32_vec()
            .first()
            .copied()
            .unwrap_or(0.0) as f64;
        let mut n_batches = 0;
        for (i, x) in batches.into_iter().enumerate() {
            let x = x?.into_device(self.device)?;
            let mut ctx = Ctx {
                train: false,
                grad: false,
                rng: crate::layer::Rng::new(step_seed(self.config.seed ^ 0x7a11d, i as u64, 0)),
            };
            let outputs = Outputs {
                decode: true,
                latent: false,
            };
            let out = self.ae.forward(&x, Sampling::Random, outputs, &mut ctx)?;
            let rec = out
                .dec
                .ok_or_else(|| RuntimeError::Other("the autoencoder gave no image".into()))?;
            let n = x.shape()[0] as f64;
            let numel = x.numel() as f64;
            let abs_sum = l1_mean_forward(&rec, &x)? as f64 * numel;
            let mut p_sum = 0.0;
            if let Some(lp) = self.loss.lpips.as_ref() {
                // Volumes: the mean LPIPS over every slice of the three axes stands for each
                // sample's distance, as in the training step.
                p_sum = if x.rank() == 5 {
                    slices_forward(lp, &x, &rec, Need::NONE)?.0 as f64 * n
                } else {
                    let (p, _) = lp.distance(&x, &rec, Need::NONE)?;
                    p.to_f32_vec().iter().map(|&v| v as f64).sum()
                };
            }
            let Nll { rec_sum, nll } = Nll::of(abs_sum, p_sum, c.perceptual_weight, lv, numel, n);
            let kl: f64 = out.kl.to_f32_vec().iter().map(|&v| v as f64).sum::<f64>() / n;
            let total = nll + c.kl_weight as f64 * kl;
            if !total.is_finite() {
                return Err(RuntimeError::Other(format!(
                    "validation loss is {total} (batch {i}): the model produces NaN/Inf"
                )));
            }
            ae_loss.add(total);
            rec_loss.add(rec_sum / numel);
            let (x_host, rec_host) = (x.to_f32_vec(), rec.to_f32_vec());
            metrics.update(&x_host, &rec_host);
            let per_sample = batch_ssim(&rec_host, &x_host, x.shape())
                .map_err(|e| RuntimeError::Other(format!("validation SSIM: {e}")))?;
            per_sample.into_iter().flatten().for_each(|v| ssim.add(v));
            n_batches += 1;
            if self.config.fast_dev_run {
                break;
            }
        }
        Ok(ValidationLog {
            ae_loss: ae_loss.get(),
            rec_loss: rec_loss.get(),
            mse: metrics.mse(),
            psnr: metrics.psnr(),
            ssim: ssim.get(),
            batches: n_batches,
        })
    }
}
