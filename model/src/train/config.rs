//! The finetuning configuration: one YAML file per experiment (configs/*.yaml), grouped as the
//! reference's Hydra experiments are (`dataloader`, `criterion`, top-level training keys).
//! Every struct denies unknown fields, so a typo is an error that lists the valid keys.

use crate::zoo::{zoo_config, ModelConfig};
use medvae_runtime::{Device, Result, RuntimeError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Name of the experiment (the run folder is `output_dir`).
    pub task_name: String,
    /// A zoo model (`medvae_4_1_2d`, ...): the architecture, unless `ddconfig` overrides it.
    pub model_name: String,
    /// A reference-style `ddconfig` replacing the zoo architecture (e.g. a reduced width for a
    /// CPU quickstart). With `weights`, the checkpoint's shapes decide instead.
    #[serde(default)]
    pub ddconfig: Option<serde_json::Value>,
    /// Latent channels with `ddconfig` (default: the zoo model's).
    #[serde(default)]
    pub embed_dim: Option<usize>,
    /// Stage 2: train only channel_ds/channel_proj on the BiomedCLIP loss.
    #[serde(default)]
    pub stage2: bool,
    /// Starting weights: a published MedVAE `.ckpt` or a safetensors file. None = random init.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// The stage-1 checkpoint a stage-2 run starts from.
    #[serde(default)]
    pub stage2_ckpt: Option<PathBuf>,
    /// open_clip's `open_clip_pytorch_model.bin` of BiomedCLIP (stage 2).
    #[serde(default)]
    pub biomedclip_weights: Option<PathBuf>,
    /// Attention heads of that tower (not visible in its shapes; BiomedCLIP's ViT-B/16: 12).
    #[serde(default = "twelve")]
    pub biomedclip_heads: usize,
    pub dataloader: DataloaderGroup,
    pub criterion: CriterionGroup,
    pub batch_size: usize,
    pub base_learning_rate: f64,
    #[serde(default = "one")]
    pub gradient_accumulation_steps: usize,
    pub max_epoch: u64,
    /// Stop after this many global steps (None: run max_epoch epochs).
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub seed: u64,
    /// One training batch and one validation batch per epoch, then stop (a smoke test).
    #[serde(default)]
    pub fast_dev_run: bool,
    /// Where the step runs: `cpu`, `cuda` or `cuda:N` (2D stage 1 only on CUDA for now).
    #[serde(default = "cpu")]
    pub device: String,
    /// Data-parallel training: one replica per entry (`[cuda:0, cuda:1]`; `[cpu, cpu]` runs
    /// the replicas on the CPU). Each replica takes `batch_size` images per step and the
    /// gradients are averaged, as the reference's processes under Accelerate; the learning
    /// rate is not scaled. Empty: one replica on `device`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// fp32 on the CPU; on CUDA the convolutions' precision: fp32, tf32 or bf16 (f32
    /// accumulation and f32 activations in every case).
    #[serde(default = "fp32")]
    pub precision: String,
    #[serde(default = "twenty")]
    pub log_every_n_steps: u64,
    #[serde(default = "five_hundred")]
    pub ckpt_every_n_steps: u64,
    #[serde(default = "one_u64")]
    pub ckpt_every_n_epochs: u64,
    /// The run folder: checkpoints/, metrics.jsonl, previews.
    pub output_dir: PathBuf,
    /// A checkpoint folder of an earlier run to continue exactly; `auto` (in the CLI) is
    /// `output_dir/checkpoints/last` when it exists, else a fresh start.
    #[serde(default)]
    pub resume_from_ckpt: Option<PathBuf>,
    /// Start a fresh run in an `output_dir` that holds an earlier run's checkpoints, replacing
    /// them and its logs (refused otherwise).
    #[serde(default)]
    pub overwrite: bool,
    /// Recompute block activations in the backward instead of keeping them (less memory).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// CPU threads (0 = all cores).
    #[serde(default)]
    pub threads: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataloaderGroup {
    /// A `data prepare` config (configs/dataloader/*.yaml).
    pub config: PathBuf,
    /// Where the prepared shards live; prepared on first use.
    pub prepared_dir: PathBuf,
    #[serde(default = "two")]
    pub workers: usize,
    /// 3D: the edge of the random cubic training crops (the reference: 64).
    #[serde(default = "sixty_four")]
    pub crop: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionGroup {
    #[serde(default = "disc_start")]
    pub disc_start: u64,
    #[serde(default = "kl_weight")]
    pub kl_weight: f32,
    #[serde(default = "half")]
    pub disc_weight: f32,
    #[serde(default = "one_f32")]
    pub disc_factor: f32,
    #[serde(default = "one_f32")]
    pub perceptual_weight: f32,
    #[serde(default)]
    pub logvar_init: f32,
    #[serde(default)]
    pub learn_logvar: bool,
    /// torchvision's `vgg16-397923af.pth` (needed when perceptual_weight > 0).
    #[serde(default)]
    pub lpips_vgg_weights: Option<PathBuf>,
    /// LPIPS' `vgg.pth` lin weights (needed when perceptual_weight > 0).
    #[serde(default)]
    pub lpips_lin_weights: Option<PathBuf>,
    #[serde(default = "sixty_four")]
    pub disc_ndf: usize,
    #[serde(default = "three")]
    pub disc_layers: usize,
}

fn twelve() -> usize {
    12
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn sixty_four() -> usize {
    64
}
fn one_u64() -> u64 {
    1
}
fn twenty() -> u64 {
    20
}
fn five_hundred() -> u64 {
    500
}
fn disc_start() -> u64 {
    3125
}
fn kl_weight() -> f32 {
    1e-6
}
fn half() -> f32 {
    0.5
}
fn one_f32() -> f32 {
    1.0
}
fn fp32() -> String {
    "fp32".into()
}

fn cpu() -> String {
    "cpu".into()
}

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Other(format!("config: {}", msg.into()))
}

impl TrainConfig {
    /// Reject values no run can use, with the key named.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(bad("batch_size must be at least 1"));
        }
        if self.gradient_accumulation_steps == 0 {
            return Err(bad("gradient_accumulation_steps must be at least 1"));
        }
        if !(self.base_learning_rate.is_finite() && self.base_learning_rate > 0.0) {
            return Err(bad("base_learning_rate must be a positive number"));
        }
        let devices = self.replica_devices();
        let kinds: Vec<bool> = devices
            .iter()
            .map(|d| d.parse::<Device>().map(|d| d.is_cpu()))
            .collect::<Result<_>>()
            .map_err(|e| {
                let key = if self.devices.is_empty() {
                    "device"
                } else {
                    "devices"
                };
                bad(format!("{key}: {e}"))
            })?;
        if kinds.iter().any(|&c| c) && kinds.iter().any(|&c| !c) {
            return Err(bad(
                "devices: CPU and CUDA replicas cannot be mixed (each step waits for the slowest)",
            ));
        }
        let on_cpu = kinds.first().copied().unwrap_or(true);
        if on_cpu && self.precision != "fp32" {
            return Err(bad(format!(
                "precision `{}`: the CPU engine trains in fp32 (set precision: fp32, or \
                 device: cuda for tf32/bf16)",
                self.precision
            )));
        }
        if !matches!(self.precision.as_str(), "fp32" | "tf32" | "bf16") {
            return Err(bad(format!(
                "precision `{}`: use fp32, tf32 or bf16",
                self.precision
            )));
        }
        if self.log_every_n_steps == 0 || self.ckpt_every_n_steps == 0 {
            return Err(bad("log_every_n_steps and ckpt_every_n_steps must be ≥ 1"));
        }
        if self.dataloader.workers == 0 {
            return Err(bad("dataloader.workers must be at least 1"));
        }
        Ok(())
    }

    /// One device per data-parallel replica: `devices`, or `device` alone.
    pub fn replica_devices(&self) -> Vec<String> {
        if self.devices.is_empty() {
            vec![self.device.clone()]
        } else {
            self.devices.clone()
        }
    }

    /// The learning rate the reference uses: accumulation × batch × base rate.
    pub fn learning_rate(&self) -> f32 {
        (self.gradient_accumulation_steps as f64 * self.batch_size as f64 * self.base_learning_rate)
            as f32
    }

    /// The architecture: `ddconfig` if given, else the zoo model's.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let zoo = zoo_config(&self.model_name)?;
        match &self.ddconfig {
            None => Ok(zoo),
            Some(dd) => {
                let mut cfg = ModelConfig::from_ddconfig(
                    dd,
                    self.embed_dim.unwrap_or(zoo.embed_dim),
                    zoo.lora_rank,
                    zoo.dims,
                )?;
                cfg.latent_head = zoo.latent_head;
                Ok(cfg)
            }
        }
    }
}
