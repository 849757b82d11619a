//! The stage-1 generator loss: finite differences of its reconstruction terms and of its
//! adversarial term (with the adaptive weight held fixed, as the reference detaches it); the
//! adaptive weight against its definition and the perceptual term's share of the gradient
//! exactly; the refusal to train a perceptual loss without LPIPS weights. See `common` for the
//! method.

mod common;

use common::{assert_checks_with, randn, randn_scaled, Named, System};
use medvae_model::autoencoder::{AutoencoderKL, Sampling};
use medvae_model::blocks::NLayerDiscriminator;
use medvae_model::layer::{zero_grads, Ctx, ParamVisitor, Parameters};
use medvae_model::layers::Init;
use medvae_model::losses::{GeneratorStep, Lpips, Need, Stage1Config, Stage1Loss};
use medvae_model::zoo::ModelConfig;
use medvae_runtime::Tensor;
use std::collections::BTreeMap;

const TOL: f64 = 1e-3;
/// Narrow VGG widths for the finite-difference checks. Not narrower: where every channel of a
/// ReLU output is 0, LPIPS' unit normalisation jumps (0 → a unit vector) as soon as one channel
/// turns positive, a discontinuity of LPIPS itself; with 16 channels such pixels are rare.
const NARROW: [usize; 5] = [16, 16, 24, 24, 24];

// -------------------------------------------------------------------- stage-1 generator
//
// The generator loss is checked in two parts, each against its own rounding scale:
// * the reconstruction terms `nll + kl_weight·kl` (a step before `disc_start`), through L1,
//   LPIPS, the KL, `logvar` and the whole autoencoder backward;
// * the adversarial term: a step after `disc_start` minus the step before is
//   `d_weight · ∂g_loss/∂θ` (the reference detaches `d_weight`), checked against finite
//   differences of `g_loss`, and `d_weight` itself against its definition from the two
//   gradients at `decoder.conv_out.weight`.
// Kinks are kept away from the steps: the image sits far above any reconstruction (no L1
// corner) and LPIPS' VGG works on the linear side of its ReLUs (only max-pool switches left).

const BEFORE_DISC: u64 = 0;
const AFTER_DISC: u64 = 10;

struct Stage1Probe {
    ae: AutoencoderKL,
    loss: Stage1Loss,
    /// The adaptive weight at the point where the gradient was taken.
    d_weight: f64,
}

impl Parameters for Stage1Probe {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.ae.visit_params(prefix, f);
        self.loss.visit_params(prefix, f);
    }
}

fn step(p: &mut Stage1Probe, inputs: &Named, ctx: &mut Ctx, at: u64) -> GeneratorStep {
    let sampling = Sampling::Eps(inputs["eps"].clone());
    p.loss
        .generator_step(&mut p.ae, &inputs["x"], sampling, at, ctx)
        .unwrap()
}

/// `nll + kl_weight·kl`, recomputed in f64 from the reconstruction (the logged `nll` is an f32
/// of a large sum), with its rounding scale: the network's relative rounding error enters
/// through each reconstructed pixel (weight `1/(N·e^logvar)`), each sample's LPIPS distance
/// (weight `C·H·W/(N·e^logvar)`) and the KL; `logvar·numel/N` is exact.
fn rec_objective(p: &mut Stage1Probe, inputs: &Named, ctx: &mut Ctx) -> (f64, f64) {
    let st = step(p, inputs, ctx, BEFORE_DISC);
    let x = &inputs["x"];
    let cfg = &p.loss.config;
    let n = x.shape()[0] as f64;
    let numel = x.numel() as f64;
    let lv = p.loss.logvar.value.to_f32_vec()[0] as f64;
    let w = (-lv).exp() / n;
    let (xs, rs) = (x.to_f32_vec(), st.rec.to_f32_vec());
    let abs_sum: f64 = xs
        .iter()
        .zip(&rs)
        .map(|(&a, &b)| (a - b).abs() as f64)
        .sum();
    let l1_rss = rs
        .iter()
        .map(|&r| (r as f64 * w).powi(2))
        .sum::<f64>()
        .sqrt();
    let lp = p.loss.lpips.as_ref().unwrap();
    let dist = lp.distance(x, &st.rec, Need::NONE).unwrap().0.to_f32_vec();
    let lpips_term = cfg.perceptual_weight as f64
        * (numel / n)
        * w
        * dist.iter().map(|&v| v as f64).sum::<f64>();
    let kl = cfg.kl_weight as f64 * st.log.kl as f64;
    let f = abs_sum * w + lpips_term + lv * numel / n + kl;
    (f, l1_rss + lpips_term.abs() + kl.abs())
}

fn rec_gradients(p: &mut Stage1Probe, inputs: &Named, ctx: &mut Ctx) -> Named {
    let log = step(p, inputs, ctx, BEFORE_DISC).log;
    assert_eq!(
        (log.d_weight, log.g_loss),
        (0.0, 0.0),
        "no adversarial term before disc_start"
    );
    Named::new()
}

/// `g_loss = −mean D(rec)`.
fn adv_objective(p: &mut Stage1Probe, inputs: &Named, ctx: &mut Ctx) -> (f64, f64) {
    let g = step(p, inputs, ctx, AFTER_DISC).log.g_loss as f64;
    (g, g.abs())
}

/// Parameter gradients of the whole model, by key.
fn grads_of(p: &mut Stage1Probe) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    p.visit_params("", &mut |k, q| {
        if let Some(g) = &q.grad {
            out.insert(k.to_string(), g.to_f32_vec());
        }
    });
    out
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

/// `(step after − step before) / d_weight` into the parameters' gradients, after checking
/// `d_weight` against its definition at `decoder.conv_out.weight`.
fn adv_gradients(p: &mut Stage1Probe, inputs: &Named, ctx: &mut Ctx) -> Named {
    zero_grads(p);
    step(p, inputs, ctx, BEFORE_DISC);
    let before = grads_of(p);
    zero_grads(p);
    let log = step(p, inputs, ctx, AFTER_DISC).log;
    let after = grads_of(p);
    let dw = log.d_weight as f64;
    assert!(
        dw > 0.0 && dw < 0.5 * 1e4,
        "adaptive weight unclamped: {log:?}"
    );
    let key = "decoder.conv_out.weight";
    let gn = norm(&before[key]);
    let adv: Vec<f32> = after[key]
        .iter()
        .zip(&before[key])
        .map(|(a, b)| a - b)
        .collect();
    let gg = norm(&adv) / dw;
    let want = p.loss.config.disc_weight as f64 * (gn / (gg + 1e-4)).min(1e4);
    assert!(
        (dw - want).abs() <= 1e-4 * want,
        "d_weight {dw} != disc_weight·|g_nll|/(|g_adv| + 1e-4) = {want}"
    );
    p.d_weight = dw;
    // The path from D into the autoencoder, end to end (the blocks in between are checked
    // with the reconstruction terms and in autoencoder.rs).
    p.visit_params("", &mut |k, q| {
        q.grad = None;
        if !ADV_PATH.contains(&k) {
            return;
        }
        if let (Some(a), Some(b)) = (after.get(k), before.get(k)) {
            let d: Vec<f32> = a
                .iter()
                .zip(b)
                .map(|(a, b)| ((a - b) as f64 / dw) as f32)
                .collect();
            q.grad = Some(Tensor::from_vec(q.value.shape(), d).unwrap());
        }
    });
    Named::new()
}

/// `smooth`: the finite-difference setting (see above); otherwise a plain random LPIPS and image.
fn stage1_probe(smooth: bool) -> (Stage1Probe, Named) {
    let cfg = ModelConfig {
        latent_head: false,
        ..common::tiny_config(2, 1, 1)
    };
    let mut ae = AutoencoderKL::new(&cfg, &mut Init::random(50)).unwrap();
    ae.visit_params("", &mut |key, p| {
        if key.contains("norm") && key.ends_with("weight") {
            return;
        }
        let v: Vec<f32> = p.value.to_f32_vec().iter().map(|x| x * 1.5).collect();
        p.value = Tensor::from_vec(p.value.shape(), v).unwrap();
    });
    let config = Stage1Config {
        kl_weight: 1e-2,
        disc_start: 5,
        logvar_init: 0.3,
        perceptual_weight: 1.0,
        ..Stage1Config::default()
    };
    let mut lpips = Lpips::new(NARROW, &mut Init::random(51)).unwrap();
    // Every VGG ReLU on its linear side (non-negative weights, the first convolution's bias
    // above any input), so that only max-pool switches are left of LPIPS' kinks.
    lpips.net.visit_params("", &mut |key, p| {
        if !smooth {
            return;
        }
        let shift = if key.starts_with("slice1.0.bias") {
            20.0
        } else {
            0.0
        };
        let v: Vec<f32> = p
            .value
            .to_f32_vec()
            .iter()
            .map(|x| x.abs() + shift)
            .collect();
        p.value = Tensor::from_vec(p.value.shape(), v).unwrap();
    });
    let disc = NLayerDiscriminator::new(1, 4, 2, &mut Init::random(52)).unwrap();
    let loss = Stage1Loss::new(config, Some(lpips), disc).unwrap();
    let x = if smooth {
        // The image far above any reconstruction: |x − rec| = x − rec, no L1 corner.
        let mut x = randn_scaled(&[2, 16, 16, 1], 53, 0.3);
        x.f32s_mut("test")
            .unwrap()
            .iter_mut()
            .for_each(|v| *v += 4.0);
        x
    } else {
        randn(&[2, 16, 16, 1], 53)
    };
    let inputs = BTreeMap::from([
        ("x".to_string(), x),
        ("eps".to_string(), randn(&[2, 8, 8, 1], 54)),
    ]);
    let probe = Stage1Probe {
        ae,
        loss,
        d_weight: 0.0,
    };
    (probe, inputs)
}

const STEPS_S1: [f32; 3] = [1e-1, 3e-2, 1e-2];
const ADV_PATH: [&str; 7] = [
    "decoder.conv_out.weight",
    "decoder.conv_out.bias",
    "decoder.norm_out.weight",
    "decoder.conv_in.weight",
    "post_quant_conv.weight",
    "quant_conv.weight",
    "encoder.conv_in.weight",
];
const GLUE_S1: [&str; 4] = [
    "decoder.conv_out.weight",
    "decoder.conv_out.bias",
    "quant_conv.weight",
    "post_quant_conv.weight",
];

#[test]
fn stage1_reconstruction_terms_gradients() {
    let (model, inputs) = stage1_probe(true);
    let mut s = System {
        model,
        inputs,
        objective: rec_objective,
        gradients: rec_gradients,
        ctx: || Ctx::train(0),
        noise_depth: 32.0,
    };
    let checks = s.check_steps(&STEPS_S1, 60, TOL);
    let mut must = GLUE_S1.to_vec();
    must.push("logvar");
    // Deep single-parameter directions are small next to the rounding of a whole step (their
    // blocks are checked sharply in fd_blocks.rs and autoencoder.rs); the glue must be sharp.
    assert_checks_with("stage-1 nll + kl", &checks, TOL, 0.4, &must);
    // LPIPS and D are frozen: nothing but logvar of the loss gets a gradient.
    s.model.loss.visit_params("", &mut |key, p| {
        assert!(key == "logvar" || p.grad.is_none(), "{key} got a gradient");
    });
}

#[test]
fn stage1_adversarial_term_and_adaptive_weight() {
    let (model, inputs) = stage1_probe(true);
    let mut s = System {
        model,
        inputs,
        objective: adv_objective,
        gradients: adv_gradients,
        ctx: || Ctx::train(0),
        noise_depth: 32.0,
    };
    // D's LeakyReLUs make g_loss piecewise smooth: short steps.
    let checks = s.check_steps(&[1e-2, 3e-3, 1e-3], 61, TOL);
    assert_eq!(checks.len(), ADV_PATH.len());
    assert_checks_with(
        "stage-1 adversarial",
        &checks,
        TOL,
        0.7,
        &[
            "decoder.conv_out.weight",
            "decoder.conv_in.weight",
            "quant_conv.weight",
        ],
    );
}

#[test]
fn stage1_refuses_perceptual_loss_without_weights() {
    let disc = NLayerDiscriminator::new(1, 4, 2, &mut Init::random(1)).unwrap();
    let err = Stage1Loss::new(Stage1Config::default(), None, disc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vgg16-397923af.pth"), "{err}");
    let disc = NLayerDiscriminator::new(1, 4, 2, &mut Init::random(1)).unwrap();
    let no_lpips = Stage1Config {
        perceptual_weight: 0.0,
        ..Stage1Config::default()
    };
    assert!(Stage1Loss::new(no_lpips, None, disc).is_ok());
}

/// The perceptual term's share of the gradient, exactly: with `perceptual_weight` on minus off,
/// `decoder.conv_out.bias` (the sum of `∂L/∂rec` over pixels) changes by
/// `perceptual_weight · C·H·W / (N·e^logvar) · Σ ∂(Σ_s p_s)/∂rec`, the LPIPS input gradient
/// computed on its own. (Catches a wrong broadcast factor, which LPIPS' small share of the
/// gradient hides from finite differences.)
#[test]
fn stage1_perceptual_gradient_scale() {
    let bias_grad = |pw: f32| {
        let (mut p, inputs) = stage1_probe(false);
        p.loss.config.perceptual_weight = pw;
        let mut ctx = Ctx::train(0);
        let st = step(&mut p, &inputs, &mut ctx, BEFORE_DISC);
        let g =
            p.ae.decoder
                .conv_out
                .bias
                .as_ref()
                .unwrap()
                .grad
                .as_ref()
                .unwrap();
        (g.to_f32_vec()[0] as f64, st.rec, p)
    };
    let (with, rec, p) = bias_grad(1.0);
    let (without, rec0, _) = bias_grad(0.0);
    assert_eq!(rec.to_f32_vec(), rec0.to_f32_vec());
    let (_, inputs) = stage1_probe(false);
    let x = &inputs["x"];
    let lp = p.loss.lpips.as_ref().unwrap();
    let (_, state) = lp.distance(x, &rec, Need::TARGET).unwrap();
    let g = lp.distance_backward(state.unwrap(), &[1.0, 1.0]).unwrap();
    let sum: f64 = g
        .target
        .unwrap()
        .to_f32_vec()
        .iter()
        .map(|&v| v as f64)
        .sum();
    let n = x.shape()[0] as f64;
    let per_sample = x.numel() as f64 / n;
    let lv = p.loss.logvar.value.to_f32_vec()[0] as f64;
    let want = per_sample * (-lv).exp() / n * sum;
    let got = with - without;
    assert!(
        (got - want).abs() <= 1e-3 * want.abs() && want.abs() > 1e-2 * without.abs(),
        "perceptual share of conv_out.bias: {got} vs {want} (total {with})"
    );
}
