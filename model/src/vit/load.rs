//! Loading the tower from open_clip's BiomedCLIP checkpoint (`open_clip_pytorch_model.bin`, a
//! `torch.save` state dict of the whole CLIP model) through the engine's safe checkpoint reader
//! (no Python, nothing executed).
//!
//! Only the image tower is read: keys under `visual.` (`visual.trunk.*`,
//! `visual.head.proj.weight`); the text tower (`text.*`) and `logit_scale` are ignored. Every
//! tower key must be present with the tower's shape, and no other `visual.*` key may exist
//! (one would be a part of a different architecture, e.g. attention pooling, that this tower
//! does not compute). Errors name the file and the key.

use super::{VisionTower, VitConfig};
use crate::layers::state::{load_params, param_shapes};
use medvae_runtime::checkpoint::{load_checkpoint, StateDict, TensorData};
use medvae_runtime::{Result, RuntimeError};
use std::path::Path;

/// Where open_clip keeps the image tower in a CLIP state dict.
pub const OPEN_CLIP_VISUAL_PREFIX: &str = "visual.";

/// The tower's `(key, shape)` entries of `state`, keys relative to the tower.
fn tower_entries<'a>(
    state: &'a StateDict,
    prefix: &str,
) -> Vec<(&'a str, &'a [usize], &'a TensorData)> {
    state
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(prefix)
                .map(|key| (key, t.shape.as_slice(), &t.data))
        })
        .collect()
}

/// Load `tower`'s parameters from the keys of `state` under `prefix` (`visual.` for an
/// open_clip checkpoint, `""` for a bare tower). Errors name `state`'s file and the first
/// offending keys, with their full names in the file.
pub fn load_tower(tower: &mut VisionTower, state: &StateDict, prefix: &str) -> Result<()> {
    let file = state.source();
    let entries = tower_entries(state, prefix);
    if entries.is_empty() {
        return Err(RuntimeError::file(
            file,
            format!("no ViT image-tower keys (`{prefix}trunk.*`): not an open_clip checkpoint of a timm tower"),
        ));
    }
    let mut floats = Vec::with_capacity(entries.len());
    for (key, shape, data) in &entries {
        match data {
            TensorData::Float(v) => floats.push((*key, *shape, v.as_slice())),
            TensorData::Int(_) => {
                return Err(RuntimeError::file(
                    file,
                    format!(
                    "key `{prefix}{key}` holds integers, a tower parameter must be floating point"
                ),
                ))
            }
        }
    }
    let report = load_params(tower, floats)?;
    let full = |k: &str| format!("`{prefix}{k}`");
    let mut problems = Vec::new();
    if let Some(k) = report.missing.first() {
        problems.push(format!(
            "missing key {} ({} tower keys missing in all)",
            full(k),
            report.missing.len()
        ));
    }
    for (k, want, got) in report.mismatched.iter().take(4) {
        problems.push(format!(
            "key {} has shape {got:?}, the tower needs {want:?}",
            full(k)
        ));
    }
    if let Some(k) = report.unexpected.first() {
        problems.push(format!(
            "unexpected key {} ({} in all): the checkpoint's tower is not a ViT with class-token pooling and a linear head",
            full(k),
            report.unexpected.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::file(file, problems.join("; ")))
    }
}

/// Read an open_clip checkpoint into a frozen tower of structure `cfg`
/// ([`VitConfig::biomedclip`] for `open_clip_pytorch_model.bin` of BiomedCLIP).
pub fn load_open_clip_tower(path: &Path, cfg: &VitConfig) -> Result<VisionTower> {
    let state = load_checkpoint(path).map_err(|e| RuntimeError::Other(e.to_string()))?;
    let mut tower = VisionTower::new(cfg, &mut crate::layers::init::Init::Zeros)?;
    load_tower(&mut tower, &state, OPEN_CLIP_VISUAL_PREFIX)?;
    tower.freeze();
    Ok(tower)
}

/// The tower's keys and PyTorch shapes under `prefix` (what a checkpoint must hold).
pub fn expected_keys(tower: &mut VisionTower, prefix: &str) -> Vec<(String, Vec<usize>)> {
    param_shapes(tower)
        .into_iter()
        .map(|(k, s)| (format!("{prefix}{k}"), s))
        .collect()
}
