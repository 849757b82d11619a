//! Which network runs inference, and with which weights.
//!
//! * `--weights F`: the configuration is derived from the checkpoint's shapes
//!   ([`ModelConfig::from_state_dict_shapes`]), so finetuned variants and small models load
//!   without a config file; a `--model` name given too must agree with it.
//! * `--model NAME` alone: refused, because random weights give meaningless latents; the error
//!   says where the published weights are. `--random-weights` allows it (smoke tests).
//!
//! Entries under `loss.` are dropped before the exact-match check: Lightning checkpoints of
//! the latent-diffusion family carry the training criterion (LPIPS, discriminator) beside the
//! autoencoder, and the reference loads them with `strict=False`. Every other key must match
//! the model exactly (missing, unexpected and mis-shaped keys are listed).

use super::error::InferError;
use crate::autoencoder::AutoencoderKL;
use crate::layers::state::load_state_dict;
use crate::layers::Init;
use crate::zoo::{zoo_config, ModelConfig, ZOO_NAMES};
use medvae_runtime::checkpoint::{load_checkpoint, StateDict};
use std::path::{Path, PathBuf};

/// Where the reference (`medvae.utils.factory`) downloads the published weights from.
pub const HF_REPO: &str = "stanfordmimi/MedVAE";

/// The published checkpoint of a zoo model, as a path inside [`HF_REPO`].
pub fn published_checkpoint(name: &str) -> Option<&'static str> {
    Some(match name {
        "medvae_4_1_2d" => "model_weights/vae_4x_1c_2D.ckpt",
        "medvae_4_3_2d" => "model_weights/vae_4x_3c_2D.ckpt",
        "medvae_4_4_2d" => "model_weights/vae_4x_4c_2D.ckpt",
        "medvae_8_1_2d" => "model_weights/vae_8x_1c_2D.ckpt",
        "medvae_8_4_2d" => "model_weights/vae_8x_4c_2D.ckpt",
        "medvae_4_1_3d" => "model_weights/vae_4x_1c_3D.ckpt",
        "medvae_8_1_3d" => "model_weights/vae_8x_1c_3D.ckpt",
        _ => return None,
    })
}

/// The refusal for a run without weights, saying where to get them.
pub fn missing_weights_message(name: Option<&str>) -> String {
    let file = name.and_then(published_checkpoint);
    let fetch = match (name, file) {
        (Some(n), Some(f)) => format!(
            "The published weights of {n} are `{f}` in the Hugging Face repository {HF_REPO} \
             (https://huggingface.co/{HF_REPO}); download them, e.g. \
             `huggingface-cli download {HF_REPO} {f} --local-dir weights`, and pass \
             --weights weights/{f}."
        ),
        _ => format!(
            "The published MedVAE weights are in the Hugging Face repository {HF_REPO} \
             (https://huggingface.co/{HF_REPO}, folder model_weights/); pass one with --weights."
        ),
    };
    format!(
        "no --weights given: medvae-fast does not download weights, and random weights give \
         meaningless latents. {fetch} A finetuned checkpoint (.ckpt, .bin or .safetensors) \
         works too. --random-weights runs with random weights (smoke tests only)."
    )
}

/// A network ready for inference.
#[derive(Debug)]
pub struct LoadedModel {
    pub model: AutoencoderKL,
    /// The zoo name, when one was given.
    pub name: Option<String>,
    /// What the weights are: a file path or "random".
    pub weights: String,
    /// Things the user should know (dropped entries, a missing latent head, ...).
    pub notes: Vec<String>,
}

/// How to obtain the model.
#[derive(Debug, Clone, Default)]
pub struct ModelRequest {
    pub name: Option<String>,
    pub weights: Option<PathBuf>,
    /// Allow random weights (with a name) instead of refusing.
    pub random_weights: bool,
    /// Seed of the random weights.
    pub seed: u64,
}

fn setup(msg: impl Into<String>) -> InferError {
    InferError::Setup(msg.into())
}

/// Build and load the model `req` describes.
pub fn load_model(req: &ModelRequest) -> Result<LoadedModel, InferError> {
    let named = match &req.name {
        Some(n) => Some(zoo_config(n).map_err(|_| {
            setup(format!(
                "unknown model `{n}`; the published models are {}",
                ZOO_NAMES.join(", ")
            ))
        })?),
        None => None,
    };
    match (&req.weights, req.random_weights) {
        (Some(_), true) => Err(setup(
            "--weights and --random-weights exclude each other: pick one",
        )),
        (Some(path), false) => load_from_file(path, req.name.clone(), named.as_ref()),
        (None, true) => {
            let cfg = named.ok_or_else(|| {
                setup("--random-weights needs --model NAME to know which network to build")
            })?;
            let model = AutoencoderKL::new(&cfg, &mut Init::random(req.seed))?;
            Ok(LoadedModel {
                model,
                name: req.name.clone(),
                weights: "random".into(),
                notes: vec!["random weights: the outputs are meaningless (smoke test)".into()],
            })
        }
        (None, false) => Err(setup(missing_weights_message(req.name.as_deref()))),
    }
}

fn load_from_file(
    path: &Path,
    name: Option<String>,
    named: Option<&ModelConfig>,
) -> Result<LoadedModel, InferError> {
    let weights_err = |msg: String| InferError::Weights {
        path: path.to_path_buf(),
        msg,
    };
    let state = load_checkpoint(path)?;
    state.check_finite()?;
    let (state, dropped) = without_criterion(state, path)?;
    let cfg = ModelConfig::from_state_dict_shapes(&state.shapes())
        .map_err(|e| weights_err(format!("not a MedVAE autoencoder checkpoint: {e}")))?;
    if let (Some(n), Some(want)) = (&name, named) {
        let diffs = config_conflicts(want, &cfg);
        if !diffs.is_empty() {
            return Err(weights_err(format!(
                "conflicts with --model {n}: {}. Leave --model out to use the checkpoint's \
                 own configuration",
                diffs.join(", ")
            )));
        }
    }
    // Zero init: every value is overwritten by the exact load below.
    let mut model = AutoencoderKL::new(&cfg, &mut Init::Zeros)?;
    let report = load_state_dict(&mut model, &state)?;
    report
        .ensure_exact(&path.display().to_string())
        .map_err(|e| weights_err(e.to_string()))?;
    let mut notes = Vec::new();
    if dropped > 0 {
        notes.push(format!(
            "ignored {dropped} training-loss entries (`loss.*`) in the checkpoint"
        ));
    }
    if cfg.dims == 2 && !cfg.latent_head {
        notes.push(
            "the checkpoint has no channel_ds/channel_proj (a stage-1 checkpoint): the 2D \
             latents are the posterior mode z, not the stage-2 latent"
                .into(),
        );
    }
    Ok(LoadedModel {
        model,
        name,
        weights: path.display().to_string(),
        notes,
    })
}

/// Drop the `loss.*` entries (see the module docs); returns how many.
fn without_criterion(state: StateDict, path: &Path) -> Result<(StateDict, usize), InferError> {
    if !state.keys().any(|k| k.starts_with("loss.")) {
        return Ok((state, 0));
    }
    let mut kept = StateDict::new(state.source().to_string());
    let mut dropped = 0;
    for (k, t) in state.into_entries() {
        if k.starts_with("loss.") {
            dropped += 1;
        } else {
            kept.insert(k, t).map_err(|e| InferError::Weights {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
        }
    }
    Ok((kept, dropped))
}

/// The structural fields on which a named configuration and a checkpoint's differ. LoRA and
/// the latent head are not compared: a finetuned variant may add or merge them.
pub fn config_conflicts(named: &ModelConfig, ckpt: &ModelConfig) -> Vec<String> {
    let mut d = Vec::new();
    let mut cmp = |what: &str, a: String, b: String| {
        if a != b {
            d.push(format!("{what} {a} (model) vs {b} (checkpoint)"));
        }
    };
    cmp("dims", named.dims.to_string(), ckpt.dims.to_string());
    cmp(
        "in_channels",
        named.in_channels.to_string(),
        ckpt.in_channels.to_string(),
    );
    cmp("out_ch", named.out_ch.to_string(), ckpt.out_ch.to_string());
    cmp("ch", named.ch.to_string(), ckpt.ch.to_string());
    cmp(
        "ch_mult",
        format!("{:?}", named.ch_mult),
        format!("{:?}", ckpt.ch_mult),
    );
    cmp(
        "num_res_blocks",
        named.num_res_blocks.to_string(),
        ckpt.num_res_blocks.to_string(),
    );
    cmp(
        "attention levels",
        format!("{:?}", named.attn_levels),
        format!("{:?}", ckpt.attn_levels),
    );
    cmp(
        "z_channels",
        named.z_channels.to_string(),
        ckpt.z_channels.to_string(),
    );
    cmp(
        "embed_dim",
        named.embed_dim.to_string(),
        ckpt.embed_dim.to_string(),
    );
    d
}
