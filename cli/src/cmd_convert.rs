//! `medvae-fast convert IN OUT`: between PyTorch `.ckpt`/`.bin` files and safetensors, keeping
//! the PyTorch key names. The output format follows OUT's extension.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use medvae_model::zoo::ModelConfig;
use medvae_runtime::checkpoint::{
    load_checkpoint_detailed, save_safetensors_with, save_torch, FloatFormat, SaveOptions,
    TorchLayout, TorchSaveOptions,
};
use std::path::PathBuf;

#[derive(Args)]
pub struct ConvertArgs {
    /// Input: a torch.save file (.ckpt Lightning checkpoint, .bin/.pt/.pth state dict) or
    /// .safetensors (format detected from the content).
    input: PathBuf,
    /// Output: .safetensors, .ckpt (Lightning layout {"state_dict": ...}) or .bin/.pt/.pth
    /// (a bare state dict). Written atomically.
    output: PathBuf,
    /// Float type of the written tensors.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    dtype: Precision,
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    F32,
    F16,
    Bf16,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let ConvertArgs {
        input,
        output,
        dtype,
    } = args;
    let float_format = match dtype {
        Precision::F32 => FloatFormat::F32,
        Precision::F16 => FloatFormat::F16,
        Precision::Bf16 => FloatFormat::BF16,
    };
    let ext = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let layout = match ext.as_str() {
        "safetensors" => None,
        "ckpt" => Some(TorchLayout::Lightning),
        "bin" | "pt" | "pth" => Some(TorchLayout::PlainStateDict),
        _ => bail!(
            "{}: unknown output format; use .safetensors, .ckpt, .bin, .pt or .pth",
            output.display()
        ),
    };
    let loaded = load_checkpoint_detailed(&input)?;
    let state = loaded.state;
    state.check_finite()?;
    if !loaded.ignored_globals.is_empty() {
        eprintln!(
            "note: {} entries outside the state dict were not converted ({})",
            loaded.ignored_globals.len(),
            loaded.ignored_globals.join(", ")
        );
    }
    // Tell the user what the file is; a state dict that is not a MedVAE converts all the same.
    let described = match ModelConfig::from_state_dict_shapes(&state.shapes()) {
        Ok(cfg) => format!(
            "MedVAE {}D, ch {}, ch_mult {:?}, {} latent channels{}",
            cfg.dims,
            cfg.ch,
            cfg.ch_mult,
            cfg.embed_dim,
            cfg.lora_rank
                .map(|r| format!(", LoRA rank {r}"))
                .unwrap_or_default()
        ),
        Err(_) => "not a MedVAE autoencoder state dict".to_string(),
    };
    match layout {
        None => save_safetensors_with(
            &output,
            &state,
            &SaveOptions {
                float_format,
                metadata: None,
            },
        ),
        Some(layout) => save_torch(
            &output,
            &state,
            TorchSaveOptions {
                layout,
                float_format,
            },
        ),
    }
    .with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{} -> {}: {} tensors ({described})",
        input.display(),
        output.display(),
        state.len()
    );
    Ok(())
}
