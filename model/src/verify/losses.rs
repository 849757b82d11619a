//! Golden cases of the stage-1 losses: LPIPS (2D, and over the slices of a volume), the
//! discriminator hinge step and the generator loss with the adaptive discriminator weight.
//!
//! Networks are built from the metadata and the shapes of the `param.*` tensors (LPIPS widths
//! from the lin layers, the autoencoder's `embed_dim` from `quant_conv`), loaded by state-dict
//! key, and every `out.*`, `grad.*` and `buf.*` tensor is produced.

use super::tensors::{activation, activation_out, on_device, target};
use super::Produced;
use crate::autoencoder::{AutoencoderKL, Sampling};
use crate::blocks::NLayerDiscriminator;
use crate::layer::{move_params, Ctx, ParamKind, ParamVisitor, Parameters};
use crate::layers::init::Init;
use crate::layers::state::{export_grads, export_params, load_params};
use crate::losses::lpips3d::{slices_backward, slices_forward};
use crate::losses::{discriminator_step, Lpips, Need, Stage1Config, Stage1Loss};
use crate::zoo::ModelConfig;
use medvae_runtime::golden::GoldenCase;
use medvae_runtime::{Device, Result, RuntimeError};
use serde_json::Value;

const LPIPS_2D: &str = "LPIPS";
const LPIPS_3D: &str = "LPIPS over slices";
const HINGE: &str = "hinge";
const GENERATOR: &str = "LPIPSWithDiscriminator optimizer_idx=0";

/// Whether this file runs the case.
pub fn handles(case: &GoldenCase) -> bool {
    matches!(case.meta_str("module"), Some(LPIPS_2D | LPIPS_3D))
        || case
            .meta_str("loss")
            .is_some_and(|l| l.starts_with(HINGE) || l.starts_with(GENERATOR))
}

/// Run a case on `device` (every network and input is moved there; the 3D LPIPS slices its
/// volumes on the device, as the 3D stage-1 step does).
pub fn run(case: &GoldenCase, device: Device) -> Result<Option<Produced>> {
    device.ensure_available()?;
    on_device(device, || run_on_target(case))
}

fn run_on_target(case: &GoldenCase) -> Result<Option<Produced>> {
    if let Some(m) = case.meta_str("module") {
        return lpips_case(case, m == LPIPS_3D).map(Some);
    }
    match case.meta_str("loss") {
        Some(l) if l.starts_with(HINGE) => disc_case(case).map(Some),
        Some(l) if l.starts_with(GENERATOR) => generator_case(case, l).map(Some),
        _ => Ok(None),
    }
}

fn bad(case: &GoldenCase, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::file(&case.path, msg)
}

/// Load every `param.{prefix}*` tensor into `model` (prefix stripped). Unexpected, missing or
/// mis-shaped keys are errors, except missing integer buffers (`num_batches_tracked`).
fn load_prefixed(case: &GoldenCase, prefix: &str, model: &mut dyn Parameters) -> Result<()> {
    let full = format!("param.{prefix}");
    let entries = case.tensors.iter().filter_map(|(k, t)| {
        k.strip_prefix(full.as_str())
            .map(|key| (key, t.shape.as_slice(), t.data.as_slice()))
    });
    let mut report = load_params(model, entries)?;
    let mut ints = Vec::new();
    model.visit_params("", &mut |key, p| {
        if p.kind == ParamKind::IntBuffer {
            ints.push(key.to_string());
        }
    });
    report.missing.retain(|k| !ints.contains(k));
    report.ensure_exact(&case.path.display().to_string())
}

/// The five VGG widths, from `param.{prefix}lin{k}.model.1.weight` (`[1, C, 1, 1]`), checked
/// against the metadata's `widths` when it has them.
fn lpips_widths(case: &GoldenCase, prefix: &str, meta_key: &str) -> Result<[usize; 5]> {
    let mut widths = [0; 5];
    for (k, w) in widths.iter_mut().enumerate() {
        let t = case.tensor(&format!("param.{prefix}lin{k}.model.1.weight"))?;
        *w = match t.shape[..] {
            [1, c, 1, 1] => c,
            _ => return Err(bad(case, format!("lin{k} weight has shape {:?}", t.shape))),
        };
    }
    if let Some(meta) = case.meta_usizes(meta_key)? {
        if meta != widths {
            return Err(bad(
                case,
                format!("metadata widths {meta:?} disagree with the lin layers {widths:?}"),
            ));
        }
    }
    Ok(widths)
}

fn scalar_gout(case: &GoldenCase, name: &str) -> Result<Vec<f32>> {
    Ok(case.tensor(name)?.data.clone())
}

fn lpips_case(case: &GoldenCase, slices: bool) -> Result<Produced> {
    let mut lp = Lpips::new(lpips_widths(case, "", "widths")?, &mut Init::Zeros)?;
    load_prefixed(case, "", &mut lp)?;
    move_params(&mut lp, target())?;
    let input = activation(case, "in.input")?;
    let target = activation(case, "in.target")?;
    let dp = scalar_gout(case, "gout.p")?;
    let mut out = Produced::new();
    let grads = if slices {
        let (p, state) = slices_forward(&lp, &input, &target, Need::BOTH)?;
        out.insert("out.p".into(), vec![p]);
        let state = state.ok_or_else(|| bad(case, "no LPIPS state"))?;
        let [dp] = dp[..] else {
            return Err(bad(case, "gout.p of the 3D LPIPS must be a scalar"));
        };
        slices_backward(&lp, state, dp)?
    } else {
        let p = lp.forward(&input, &target, Need::BOTH)?;
        out.insert("out.p".into(), p.to_f32_vec());
        let dp = medvae_runtime::Tensor::from_vec(&[dp.len()], dp)?;
        lp.backward(&dp)?
    };
    for (name, g) in [("input", grads.input), ("target", grads.target)] {
        let g = g.ok_or_else(|| bad(case, format!("no gradient for {name}")))?;
        out.insert(format!("grad.in.{name}"), activation_out(&g)?);
    }
    Ok(out)
}

/// `disc: {ndf, n_layers}` of the metadata.
fn discriminator(case: &GoldenCase, input_nc: usize) -> Result<NLayerDiscriminator> {
    let d = case
        .meta
        .get("disc")
        .ok_or_else(|| bad(case, "metadata has no `disc`"))?;
    let field = |k: &str| {
        d.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(case, format!("`disc.{k}` missing")))
    };
    NLayerDiscriminator::new(
        input_nc,
        field("ndf")?,
        field("n_layers")?,
        &mut Init::Zeros,
    )
}

/// `grad.param.{prefix}*` of every parameter with a gradient and `buf.{prefix}*` of every
/// float buffer.
fn export(model: &mut dyn Parameters, prefix: &str, out: &mut Produced) {
    for g in export_grads(model) {
        out.insert(format!("grad.param.{prefix}{}", g.key), g.data);
    }
    for p in export_params(model) {
        if p.kind == ParamKind::Buffer {
            out.insert(format!("buf.{prefix}{}", p.key), p.data);
        }
    }
}

fn disc_case(case: &GoldenCase) -> Result<Produced> {
    let real = activation(case, "in.real")?;
    let fake = activation(case, "in.fake")?;
    let mut disc = discriminator(case, *real.shape().last().unwrap_or(&0))?;
    load_prefixed(case, "", &mut disc)?;
    move_params(&mut disc, target())?;
    let step = discriminator_step(&mut disc, &real, &fake, 1.0, &mut Ctx::train(0))?;
    let mut out = Produced::new();
    out.insert("out.loss".into(), vec![step.loss]);
    out.insert("out.logits_real".into(), activation_out(&step.logits_real)?);
    out.insert("out.logits_fake".into(), activation_out(&step.logits_fake)?);
    export(&mut disc, "", &mut out);
    Ok(out)
}

/// The autoencoder and the loss under the golden's keys (`ae.*`, `logvar`, `lpips.*`, `disc.*`).
struct Stage1Case {
    ae: AutoencoderKL,
    loss: Stage1Loss,
}

impl Parameters for Stage1Case {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.ae
            .visit_params(&crate::layer::join_key(prefix, "ae"), f);
        self.loss.visit_params(prefix, f);
    }
}

fn generator_case(case: &GoldenCase, loss_name: &str) -> Result<Produced> {
    let x = activation(case, "in.x")?;
    let dd = case
        .meta
        .get("ae")
        .ok_or_else(|| bad(case, "metadata has no `ae` ddconfig"))?;
    // embed_dim from quant_conv (out channels = 2·embed_dim).
    let qc = case.tensor("param.ae.quant_conv.weight")?;
    let embed_dim = qc.shape.first().copied().unwrap_or(0) / 2;
    let cfg = ModelConfig::from_ddconfig(dd, embed_dim, None, 2)?;
    let ae = AutoencoderKL::new(&cfg, &mut Init::Zeros)?;
    let lpips = Lpips::new(
        lpips_widths(case, "lpips.", "lpips_widths")?,
        &mut Init::Zeros,
    )?;
    let disc = discriminator(case, *x.shape().last().unwrap_or(&0))?;
    let config = Stage1Config {
        kl_weight: case.meta_f64("kl_weight")? as f32,
        perceptual_weight: case.meta_f64("perceptual_weight")? as f32,
        disc_weight: case.meta_f64("disc_weight")? as f32,
        disc_factor: case.meta_f64_or("disc_factor", 1.0)? as f32,
        // "… after disc_start": the adversarial term is on at step 0; "… before …": off.
        disc_start: u64::from(loss_name.contains("before disc_start")),
        logvar_init: 0.0,
        learn_logvar: case.has("grad.param.logvar"),
    };
    let mut s = Stage1Case {
        ae,
        loss: Stage1Loss::new(config, Some(lpips), disc)?,
    };
    load_prefixed(case, "", &mut s)?;
    move_params(&mut s.ae, target())?;
    s.loss.to_device(target())?;
    let sampling = Sampling::Eps(activation(case, "in.eps")?);
    let g = s
        .loss
        .generator_step(&mut s.ae, &x, sampling, 0, &mut Ctx::train(0))?;
    let mut out = Produced::new();
    for (k, v) in [
        ("loss", g.log.total),
        ("nll_loss", g.log.nll),
        ("kl_loss", g.log.kl),
        ("g_loss", g.log.g_loss),
        ("d_weight", g.log.d_weight),
        ("rec_loss_mean", g.log.rec),
    ] {
        out.insert(format!("out.{k}"), vec![v]);
    }
    out.insert("out.rec".into(), activation_out(&g.rec)?);
    export(&mut s.ae, "ae.", &mut out);
    export(&mut s.loss.disc, "disc.", &mut out);
    if let Some(gl) = s.loss.logvar.grad.as_ref() {
        out.insert("grad.param.logvar".into(), gl.to_f32_vec());
    }
    Ok(out)
}
