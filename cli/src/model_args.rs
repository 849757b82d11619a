//! The options `infer` and `decode` share: which network and weights, how fast, and the 3D
//! sliding window.

use anyhow::Result;
use clap::Args;
use medvae_model::infer::{load_model, LoadedModel, ModelRequest, DEFAULT_OVERLAP};
use medvae_runtime::Device;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Published model: medvae_4_1_2d, medvae_4_3_2d, medvae_4_4_2d, medvae_8_1_2d,
    /// medvae_8_4_2d, medvae_4_1_3d, medvae_8_1_3d. With --weights it may be left out (the
    /// configuration is read from the checkpoint); if given, it must agree with it.
    #[arg(long)]
    pub model: Option<String>,
    /// Weights: a published MedVAE .ckpt, a finetuned checkpoint, .bin or .safetensors.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Run with random weights instead of refusing without --weights (smoke tests only).
    #[arg(long)]
    pub random_weights: bool,
    /// CUDA convolution precision: fp32 (direct kernels, matches the CPU to ~1e-6), tf32 or
    /// bf16 (tensor cores, faster, ~1e-3 / ~1e-2 relative).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "tf32", "bf16"])]
    pub precision: String,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl ModelArgs {
    /// The precision the convolutions compute in on `devices`: `--precision` where a GPU runs
    /// the model, fp32 on the CPU (whose kernels are all fp32).
    pub fn precision_on(&self, devices: &[Device]) -> &str {
        if devices.iter().all(|d| d.is_cpu()) {
            "fp32"
        } else {
            &self.precision
        }
    }

    /// Size the CPU thread pool, then load the network and its weights.
    pub fn load(&self) -> Result<LoadedModel> {
        if self.threads > 0 {
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads)
                .build_global()?;
        }
        Ok(load_model(&ModelRequest {
            name: self.model.clone(),
            weights: self.weights.clone(),
            random_weights: self.random_weights,
            seed: 0,
        })?)
    }
}

#[derive(Args, Debug)]
pub struct WindowArgs {
    /// Largest 3D window edge (image voxels); longer axes are split into overlapping windows.
    #[arg(long, default_value_t = 160)]
    pub roi_size: usize,
    /// Overlap between neighbouring 3D windows (MONAI's default).
    #[arg(long, default_value_t = DEFAULT_OVERLAP)]
    pub overlap: f64,
}
