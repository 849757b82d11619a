//! Golden cases with a `module` in their metadata: whole blocks and networks, forward and
//! backward. The module is built from the metadata alone (configuration, spatial rank), its
//! parameters loaded from the case's `param.*` tensors by state-dict key, and every output,
//! input gradient, parameter gradient and updated buffer is produced for comparison.

use super::tensors::{activation, activation_out, plain};
use super::Produced;
use crate::autoencoder::{AeGrads, AutoencoderKL, Outputs, Sampling};
use crate::blocks::{AttnBlock, NLayerDiscriminator, ResnetBlock};
use crate::layer::{move_params, Ctx, Layer, ParamKind, Parameters};
use crate::layers::init::Init;
use crate::layers::state::{export_grads, export_params, load_params};
use crate::zoo::ModelConfig;
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::{Device, Result, RuntimeError, Tensor};
use serde_json::Value;

/// Run a module case. `Ok(None)`: the module is not implemented.
pub fn run(case: &GoldenCase, device: Device) -> Result<Option<Produced>> {
    device.ensure_available()?;
    let module = case.meta_str("module").unwrap_or_default();
    super::tensors::on_device(device, || run_module(case, module))
}

fn run_module(case: &GoldenCase, module: &str) -> Result<Option<Produced>> {
    let produced = match module {
        "ResnetBlock" => {
            let (cin, cout) = (meta_usize(case, "in")?, meta_usize(case, "out")?);
            let mut block =
                ResnetBlock::new(spatial_rank(case)?, cin, cout, 0.0, &mut Init::Zeros)?;
            single_input(case, &mut block, training(case, true))?
        }
        "AttnBlock" => {
            let mut block = AttnBlock::new(
                spatial_rank(case)?,
                meta_usize(case, "channels")?,
                &mut Init::Zeros,
            )?;
            single_input(case, &mut block, training(case, true))?
        }
        "NLayerDiscriminator" => {
            let mut d = NLayerDiscriminator::new(
                meta_usize(case, "input_nc")?,
                meta_usize(case, "ndf")?,
                meta_usize(case, "n_layers")?,
                &mut Init::Zeros,
            )?;
            single_input(case, &mut d, training(case, true))?
        }
        "AutoencoderKL_2D"
        | "AutoencoderKL_3D"
        | "AutoencoderKL_2D+LoRA"
        | "AutoencoderKL_3D+LoRA" => autoencoder(case)?,
        _ => return Ok(None),
    };
    Ok(Some(produced))
}

fn meta_usize(case: &GoldenCase, key: &str) -> Result<usize> {
    let v = case.meta_f64(key)?;
    if v < 0.0 || v.fract() != 0.0 {
        return Err(RuntimeError::file(
            &case.path,
            format!("`{key}` = {v} is not a count"),
        ));
    }
    Ok(v as usize)
}

/// The spatial rank: `dim` in the metadata, checked against the input's rank.
fn spatial_rank(case: &GoldenCase) -> Result<usize> {
    let from_input = case.tensor("in.x")?.shape.len().saturating_sub(2);
    let rank = match case.meta.get("dim") {
        Some(_) => meta_usize(case, "dim")?,
        None => from_input,
    };
    if rank != from_input || !(rank == 2 || rank == 3) {
        return Err(RuntimeError::file(
            &case.path,
            format!(
                "spatial rank {rank} does not fit input shape {:?}",
                case.tensor("in.x")?.shape
            ),
        ));
    }
    Ok(rank)
}

/// Training-mode semantics: the case's `training` flag if it has one, else `default`.
fn training(case: &GoldenCase, default: bool) -> bool {
    case.meta
        .get("training")
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

fn ctx_for(train: bool) -> Ctx {
    if train {
        Ctx::train(0)
    } else {
        Ctx::eval_with_grad()
    }
}

/// Load every `param.*` tensor by key. Unexpected or mis-shaped keys are errors; a missing key
/// is tolerated only for integer buffers (`num_batches_tracked`, which the goldens omit).
fn load_case_params(case: &GoldenCase, model: &mut dyn Parameters) -> Result<()> {
    let entries = case.tensors.iter().filter_map(|(k, t)| {
        k.strip_prefix("param.")
            .map(|key| (key, t.shape.as_slice(), t.data.as_slice()))
    });
    let mut report = load_params(model, entries)?;
    let mut int_buffers = Vec::new();
    model.visit_params("", &mut |key, p| {
        if p.kind == ParamKind::IntBuffer {
            int_buffers.push(key.to_string());
        }
    });
    report.missing.retain(|k| !int_buffers.contains(k));
    report.ensure_exact(&case.path.display().to_string())?;
    move_params(model, super::tensors::target())
}

/// `grad.param.*` of every trained parameter and `buf.*` of every float buffer.
fn param_outputs(model: &mut dyn Parameters, out: &mut Produced) {
    for g in export_grads(model) {
        out.insert(format!("grad.param.{}", g.key), g.data);
    }
    for p in export_params(model) {
        if p.kind == ParamKind::Buffer {
            out.insert(format!("buf.{}", p.key), p.data);
        }
    }
}

/// The single `gout.<name>` of a one-output module.
fn output_name(case: &GoldenCase) -> Result<String> {
    let names: Vec<&str> = case.names_with("gout.").collect();
    match names[..] {
        [one] => Ok(one.trim_start_matches("gout.").to_string()),
        _ => Err(RuntimeError::file(
            &case.path,
            format!("expected one gout.* tensor, found {names:?}"),
        )),
    }
}

fn single_input(case: &GoldenCase, layer: &mut dyn Layer, train: bool) -> Result<Produced> {
    load_case_params(case, layer)?;
    let name = output_name(case)?;
    let mut ctx = ctx_for(train);
    let y = layer.forward_owned(activation(case, "in.x")?, &mut ctx)?;
    let dx = layer.backward(&activation(case, &format!("gout.{name}"))?)?;
    let mut out = Produced::new();
    out.insert(format!("out.{name}"), activation_out(&y)?);
    out.insert("grad.in.x".into(), activation_out(&dx)?);
    param_outputs(layer, &mut out);
    Ok(out)
}

fn autoencoder(case: &GoldenCase) -> Result<Produced> {
    let dd = case
        .meta
        .get("ddconfig")
        .ok_or_else(|| RuntimeError::file(&case.path, "AutoencoderKL case without `ddconfig`"))?;
    let embed_dim = meta_usize(case, "embed_dim")?;
    let lora_rank = match case.meta.get("lora_rank") {
        None | Some(Value::Null) => None,
        Some(_) => Some(meta_usize(case, "lora_rank")?),
    };
    let cfg = ModelConfig::from_ddconfig(dd, embed_dim, lora_rank, spatial_rank(case)?)?;
    let mut ae = AutoencoderKL::new(&cfg, &mut Init::Zeros)?;
    load_case_params(case, &mut ae)?;
    // LoRA dropout (p = 0.1) makes a training-mode pass random: a LoRA reference is eval mode.
    let mut ctx = ctx_for(training(case, lora_rank.is_none()));
    let sampling = if case.has("in.eps") {
        Sampling::Eps(activation(case, "in.eps")?)
    } else {
        Sampling::Mode
    };
    let outputs = Outputs {
        decode: case.has("out.dec"),
        latent: case.has("out.latent"),
    };
    let fwd = ae.forward(&activation(case, "in.x")?, sampling, outputs, &mut ctx)?;
    let gout = |name: &str| -> Result<Option<Tensor>> {
        let key = format!("gout.{name}");
        if !case.has(&key) {
            Ok(None)
        } else if name == "kl" {
            plain(case, &key).map(Some)
        } else {
            activation(case, &key).map(Some)
        }
    };
    let (gm, gz, gd, gl, gk) = (
        gout("moments")?,
        gout("z")?,
        gout("dec")?,
        gout("latent")?,
        gout("kl")?,
    );
    let grads = AeGrads {
        moments: gm.as_ref(),
        z: gz.as_ref(),
        dec: gd.as_ref(),
        latent: gl.as_ref(),
        kl: gk.as_ref(),
    };
    let din = ae.backward(grads, case.has("grad.in.x"))?;
    let mut out = Produced::new();
    out.insert("out.moments".into(), activation_out(&fwd.moments)?);
    out.insert("out.z".into(), activation_out(&fwd.z)?);
    out.insert("out.kl".into(), fwd.kl.to_f32_vec());
    if let Some(d) = &fwd.dec {
        out.insert("out.dec".into(), activation_out(d)?);
    }
    if let Some(l) = &fwd.latent {
        out.insert("out.latent".into(), activation_out(l)?);
    }
    if let Some(dx) = &din.x {
        out.insert("grad.in.x".into(), activation_out(dx)?);
    }
    if let Some(de) = &din.eps {
        out.insert("grad.in.eps".into(), activation_out(de)?);
    }
    param_outputs(&mut ae, &mut out);
    Ok(out)
}
