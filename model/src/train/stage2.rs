//! Stage 2 of 2D finetuning: the autoencoder of a stage-1 checkpoint, frozen except the latent
//! head (`channel_ds`, `channel_proj`), trained on the BiomedCLIP latent loss (the frozen
//! ViT-B/16 image tower compares the image with the latent rendered as an image).

use super::config::TrainConfig;
use crate::autoencoder::{AutoencoderKL, Sampling};
use crate::layer::{Ctx, Parameters};
use crate::losses::stage2::{stage2_step, BiomedClipLatentLoss};
use crate::vit::load::{load_tower, OPEN_CLIP_VISUAL_PREFIX};
use crate::vit::{VisionTower, VitConfig};
use medvae_runtime::checkpoint::{load_checkpoint, StateDict};
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::path::{Path, PathBuf};

/// Where the BiomedCLIP weights come from, for error messages.
pub const BIOMEDCLIP_HELP: &str = "Stage 2 needs BiomedCLIP's image tower: download \
    `open_clip_pytorch_model.bin` from the Hugging Face repository \
    microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 and set `biomedclip_weights`.";

/// The starting weights of a stage-2 run: `stage2_ckpt`, a run checkpoint folder (its
/// `model.safetensors`) or a `.ckpt`/`.bin`/`.safetensors` file.
pub fn stage1_weights(config: &TrainConfig) -> Result<(PathBuf, StateDict)> {
    let given = config.stage2_ckpt.as_ref().ok_or_else(|| {
        RuntimeError::Other(
            "config: stage2 is true but `stage2_ckpt` is not set: stage 2 starts from a \
             stage-1 checkpoint (a run's checkpoints/best folder, or a .ckpt/.safetensors file)"
                .into(),
        )
    })?;
    let file = if given.is_dir() {
        given.join("model.safetensors")
    } else {
        given.clone()
    };
    let state = load_checkpoint(&file).map_err(|e| RuntimeError::Other(e.to_string()))?;
    Ok((file, state))
}

/// The frozen tower from open_clip's checkpoint; its structure comes from the file's shapes
/// (the head count, which shapes do not show, from `biomedclip_heads`).
pub fn load_loss(config: &TrainConfig) -> Result<BiomedClipLatentLoss> {
    let path: &Path = config
        .biomedclip_weights
        .as_deref()
        .ok_or_else(|| RuntimeError::Other(BIOMEDCLIP_HELP.into()))?;
    let state = load_checkpoint(path).map_err(|e| RuntimeError::Other(e.to_string()))?;
    let shapes: Vec<(String, Vec<usize>)> = state
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(OPEN_CLIP_VISUAL_PREFIX)
                .map(|k| (k.to_string(), t.shape.clone()))
        })
        .collect();
    if shapes.is_empty() {
        return Err(RuntimeError::file(
            path,
            format!("no `{OPEN_CLIP_VISUAL_PREFIX}*` keys: not an open_clip checkpoint"),
        ));
    }
    let cfg = VitConfig::from_shapes(&shapes, config.biomedclip_heads)
        .map_err(|e| RuntimeError::file(path, e.to_string()))?;
    let mut tower = VisionTower::new(&cfg, &mut crate::layers::Init::Zeros)?;
    load_tower(&mut tower, &state, OPEN_CLIP_VISUAL_PREFIX)?;
    tower.freeze();
    Ok(BiomedClipLatentLoss::new(tower))
}

/// Freeze everything but the latent head.
pub fn train_only_latent_head(ae: &mut AutoencoderKL) -> Result<()> {
    let mut head = 0;
    ae.visit_params("", &mut |key, p| {
        let is_head = key.starts_with("channel_ds.") || key.starts_with("channel_proj.");
        p.trainable = is_head && !p.kind.is_buffer();
        head += usize::from(is_head);
    });
    if head == 0 {
        return Err(RuntimeError::Other(
            "stage 2 trains the latent head (channel_ds/channel_proj), which this model lacks"
                .into(),
        ));
    }
    Ok(())
}

/// One stage-2 loss evaluation and backward (gradients accumulate into the head).
pub fn step(
    ae: &mut AutoencoderKL,
    loss: &mut BiomedClipLatentLoss,
    x: &Tensor,
    ctx: &mut Ctx,
) -> Result<f32> {
    Ok(stage2_step(ae, loss, x, Sampling::Random, ctx)?.value.loss)
}
