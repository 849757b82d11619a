//! Golden cases of the open_clip/timm ViT image tower (`module` = `open_clip TimmModel(vit_…)`):
//! the tower is built from the metadata (`img_size`, `patch`, `width`, `depth`, `heads`,
//! `embed_dim`, `proj_bias`) cross-checked against the `param.*` shapes, loaded, run on
//! `in.x`, and back-propagated from `gout.features` to `grad.in.x`.

use super::tensors::{activation, activation_out, plain};
use super::Produced;
use crate::layer::{move_params, Ctx, Layer};
use crate::layers::init::Init;
use crate::layers::state::load_params;
use crate::vit::{VisionTower, VitConfig};
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::{Device, Result, RuntimeError};
use serde_json::Value;

/// The `module` of the tower cases (timm's `vit_base_patch16_224`, possibly narrowed).
const MODULE_PREFIX: &str = "open_clip TimmModel(vit_base_patch16_224";

pub fn handles(case: &GoldenCase) -> bool {
    case.meta_str("module")
        .is_some_and(|m| m.starts_with(MODULE_PREFIX))
}

/// A non-negative integer field of `meta`.
pub fn meta_count(case: &GoldenCase, meta: &Value, key: &str) -> Result<usize> {
    meta.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| RuntimeError::file(&case.path, format!("metadata needs a count `{key}`")))
}

/// `(key, shape)` of the case's `param.<prefix>*` tensors, keys relative to the tower.
pub fn tower_shapes(case: &GoldenCase, prefix: &str) -> Vec<(String, Vec<usize>)> {
    case.tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("param.")
                .and_then(|k| k.strip_prefix(prefix))
                .map(|k| (k.to_string(), t.shape.clone()))
        })
        .collect()
}

/// Build the tower of the case's `param.<prefix>*` tensors with `heads` heads and load them
/// (onto the verify target device); every tower key must be given and no other key under the
/// prefix.
pub fn load_case_tower(case: &GoldenCase, prefix: &str, heads: usize) -> Result<VisionTower> {
    let cfg = VitConfig::from_shapes(&tower_shapes(case, prefix), heads)
        .map_err(|e| RuntimeError::file(&case.path, e.to_string()))?;
    let mut tower = VisionTower::new(&cfg, &mut Init::Zeros)?;
    let entries = case.tensors.iter().filter_map(|(k, t)| {
        k.strip_prefix("param.")
            .and_then(|k| k.strip_prefix(prefix))
            .map(|key| (key, t.shape.as_slice(), t.data.as_slice()))
    });
    load_params(&mut tower, entries)?.ensure_exact(&case.path.display().to_string())?;
    tower.freeze();
    move_params(&mut tower, super::tensors::target())?;
    Ok(tower)
}

/// The metadata's structure must be what the parameters say.
fn check_meta(case: &GoldenCase, cfg: &VitConfig) -> Result<()> {
    let meta = &case.meta;
    let expect = [
        ("img_size", cfg.image_size),
        ("patch", cfg.patch),
        ("width", cfg.width),
        ("depth", cfg.depth),
        ("embed_dim", cfg.embed_dim),
    ];
    for (key, have) in expect {
        let want = meta_count(case, meta, key)?;
        if want != have {
            return Err(RuntimeError::file(
                &case.path,
                format!("metadata `{key}` = {want}, the parameters give {have}"),
            ));
        }
    }
    if let Some(b) = meta.get("proj_bias").and_then(Value::as_bool) {
        if b != cfg.proj_bias {
            return Err(RuntimeError::file(
                &case.path,
                format!(
                    "metadata `proj_bias` = {b}, the parameters say {}",
                    cfg.proj_bias
                ),
            ));
        }
    }
    Ok(())
}

/// Run a tower case.
pub fn run(case: &GoldenCase, device: Device) -> Result<Option<Produced>> {
    device.ensure_available()?;
    super::tensors::on_device(device, || run_tower(case))
}

fn run_tower(case: &GoldenCase) -> Result<Option<Produced>> {
    let heads = meta_count(case, &case.meta, "heads")?;
    let mut tower = load_case_tower(case, "", heads)?;
    check_meta(case, &tower.config)?;
    let mut ctx = Ctx::eval_with_grad();
    let y = tower.forward_owned(activation(case, "in.x")?, &mut ctx)?;
    let dx = tower.backward(&plain(case, "gout.features")?)?;
    let mut out = Produced::new();
    out.insert("out.features".into(), y.to_f32_vec());
    out.insert("grad.in.x".into(), activation_out(&dx)?);
    Ok(Some(out))
}
