//! The stage-2 BiomedCLIP latent-loss golden case (`loss` = `BiomedClipLoss(compute_lat_loss)
//! …`): an autoencoder (`param.ae.*`, structure from its shapes) with only its latent head
//! trainable, the tower (`param.clip.*`), `in.x` and the sampling noise `in.eps`. Produces
//! `out.latent`, `out.per_sample`, `out.loss` and the head's `grad.param.ae.*` (plain
//! gradients of the loss).

use super::tensors::{activation, activation_out};
use super::vit::{load_case_tower, meta_count};
use super::Produced;
use crate::autoencoder::{AutoencoderKL, Sampling};
use crate::layer::{move_params, set_trainable, Ctx, Parameters};
use crate::layers::init::Init;
use crate::layers::state::{export_grads, load_params};
use crate::losses::stage2::{stage2_step, BiomedClipLatentLoss};
use crate::zoo::ModelConfig;
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::{Device, Result, RuntimeError};

const LOSS_PREFIX: &str = "BiomedClipLoss(compute_lat_loss)";

/// The case metadata names no head count: the generator's tiny tower (`gen_golden.py`,
/// `vit()`: `num_heads=4`, the tower of `vit/timm_vit_tiny_encode`, whose metadata states it)
/// is shared by this case. A `heads` field in the metadata overrides it.
const GOLDEN_TINY_TOWER_HEADS: usize = 4;

pub fn handles(case: &GoldenCase) -> bool {
    case.meta_str("loss")
        .is_some_and(|m| m.starts_with(LOSS_PREFIX))
}

fn autoencoder(case: &GoldenCase) -> Result<AutoencoderKL> {
    let prefix = "param.ae.";
    let shapes: Vec<(String, Vec<usize>)> = case
        .tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(prefix)
                .map(|k| (k.to_string(), t.shape.clone()))
        })
        .collect();
    let cfg = ModelConfig::from_state_dict_shapes(&shapes)
        .map_err(|e| RuntimeError::file(&case.path, e.to_string()))?;
    let mut ae = AutoencoderKL::new(&cfg, &mut Init::Zeros)?;
    let entries = case.tensors.iter().filter_map(|(k, t)| {
        k.strip_prefix(prefix)
            .map(|key| (key, t.shape.as_slice(), t.data.as_slice()))
    });
    load_params(&mut ae, entries)?.ensure_exact(&case.path.display().to_string())?;
    // Stage 2 trains the latent head only.
    set_trainable(&mut ae, false);
    let head = ae
        .head
        .as_mut()
        .ok_or_else(|| RuntimeError::file(&case.path, "the autoencoder has no latent head"))?;
    set_trainable(head, true);
    move_params(&mut ae, super::tensors::target())?;
    Ok(ae)
}

pub fn run(case: &GoldenCase, device: Device) -> Result<Option<Produced>> {
    device.ensure_available()?;
    super::tensors::on_device(device, || run_step(case))
}

fn run_step(case: &GoldenCase) -> Result<Option<Produced>> {
    let heads = match case.meta.get("heads") {
        Some(_) => meta_count(case, &case.meta, "heads")?,
        None => GOLDEN_TINY_TOWER_HEADS,
    };
    let tower = load_case_tower(case, "clip.", heads)?;
    let size = meta_count(case, &case.meta, "image_size")?;
    if size != tower.config.image_size {
        return Err(RuntimeError::file(
            &case.path,
            format!(
                "`image_size` {size} differs from the tower's {}",
                tower.config.image_size
            ),
        ));
    }
    let mut loss = BiomedClipLatentLoss::new(tower);
    let mut ae = autoencoder(case)?;
    let sampling = if case.has("in.eps") {
        Sampling::Eps(activation(case, "in.eps")?)
    } else {
        Sampling::Mode
    };
    let x = activation(case, "in.x")?;
    let out = stage2_step(&mut ae, &mut loss, &x, sampling, &mut Ctx::eval_with_grad())?;
    let mut produced = Produced::new();
    produced.insert("out.loss".into(), vec![out.value.loss]);
    produced.insert("out.per_sample".into(), out.value.per_sample.clone());
    produced.insert("out.latent".into(), activation_out(&out.latent)?);
    for g in export_grads(&mut ae as &mut dyn Parameters) {
        produced.insert(format!("grad.param.ae.{}", g.key), g.data);
    }
    Ok(Some(produced))
}
