//! The stage-1 losses: finite-difference checks of LPIPS' input gradients (2D, 1 and 3
//! channels, and over the slices of a volume), of the discriminator hinge step and of the whole
//! stage-1 generator loss (with the adaptive weight held fixed, as the reference detaches it);
//! weight-file errors name the file and the key. See `common` for the method.

mod common;

use common::{assert_checks_with, randn, randn_scaled, Named, System};
use medvae_model::autoencoder::{AutoencoderKL, Sampling};
use medvae_model::blocks::NLayerDiscriminator;
use medvae_model::layer::{zero_grads, Ctx, ParamVisitor, Parameters};
use medvae_model::layers::Init;
use medvae_model::losses::lpips3d::{slices_backward, slices_forward};
use medvae_model::losses::{
    discriminator_step, GeneratorStep, Lpips, Need, Stage1Config, Stage1Loss,
};
use medvae_model::zoo::ModelConfig;
use medvae_runtime::checkpoint::{
    save_safetensors, save_torch, NamedTensor, StateDict, TorchLayout, TorchSaveOptions,
};
use medvae_runtime::Tensor;
use std::collections::BTreeMap;

const TOL: f64 = 1e-3;
/// Narrow VGG widths for the finite-difference checks. Not narrower: where every channel of a
/// ReLU output is 0, LPIPS' unit normalisation jumps (0 → a unit vector) as soon as one channel
/// turns positive, a discontinuity of LPIPS itself; with 16 channels such pixels are rare.
const NARROW: [usize; 5] = [16, 16, 24, 24, 24];

// ------------------------------------------------------------------------------- LPIPS

/// LPIPS with fixed upstream gradients of its per-sample outputs.
struct LpipsProbe {
    lp: Lpips,
    g: Vec<f32>,
    volume: bool,
}

impl Parameters for LpipsProbe {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.lp.visit_params(prefix, f);
    }
}

fn lpips_objective(p: &mut LpipsProbe, inputs: &Named, _ctx: &mut Ctx) -> (f64, f64) {
    let (a, b) = (&inputs["input"], &inputs["target"]);
    let values = if p.volume {
        vec![slices_forward(&p.lp, a, b, Need::NONE).unwrap().0]
    } else {
        p.lp.distance(a, b, Need::NONE).unwrap().0.to_f32_vec()
    };
    let (mut f, mut m2) = (0.0, 0.0);
    for (v, g) in values.iter().zip(&p.g) {
        let t = *v as f64 * *g as f64;
        f += t;
        m2 += t * t;
    }
    (f, m2.sqrt())
}

fn lpips_gradients(p: &mut LpipsProbe, inputs: &Named, _ctx: &mut Ctx) -> Named {
    let (a, b) = (&inputs["input"], &inputs["target"]);
    let g = if p.volume {
        let (_, s) = slices_forward(&p.lp, a, b, Need::BOTH).unwrap();
        slices_backward(&p.lp, s.unwrap(), p.g[0]).unwrap()
    } else {
        p.lp.forward(a, b, Need::BOTH).unwrap();
        p.lp.backward(&Tensor::from_vec(&[p.g.len()], p.g.clone()).unwrap())
            .unwrap()
    };
    BTreeMap::from([
        ("input".to_string(), g.input.unwrap()),
        ("target".to_string(), g.target.unwrap()),
    ])
}

fn lpips_system(shape: &[usize], volume: bool, seed: u64) -> System<LpipsProbe> {
    let lp = Lpips::new(NARROW, &mut Init::random(seed)).unwrap();
    let n = if volume { 1 } else { shape[0] };
    let g = randn(&[n], seed + 1).to_f32_vec();
    let input = randn(shape, seed + 2);
    let target = randn(shape, seed + 3);
    System {
        model: LpipsProbe { lp, g, volume },
        inputs: BTreeMap::from([("input".to_string(), input), ("target".to_string(), target)]),
        objective: lpips_objective,
        gradients: lpips_gradients,
        ctx: Ctx::eval_with_grad,
        noise_depth: 32.0,
    }
}

/// Both input gradients along random directions, for three weight/input draws. ReLU and
/// max-pool switches make LPIPS piecewise smooth, so each direction takes the best of several
/// steps (a wrong gradient disagrees at every step). LPIPS' input gradient is small next to
/// the distance's rounding in some directions (the 1-channel input through the broadcast);
/// half of the directions must resolve a 1 % error, all must agree. The per-layer distance is
/// checked exactly in f64 (`lpips_distance` unit tests).
fn check_lpips(label: &str, shape: &[usize], volume: bool) {
    let mut all = Vec::new();
    for seed in [10, 20, 30] {
        let mut s = lpips_system(shape, volume, seed);
        all.extend(s.check_steps(&[3e-2, 1e-2, 3e-3], seed, TOL));
    }
    assert_checks_with(label, &all, TOL, 0.5, &[]);
}

#[test]
fn lpips_input_gradients_2d() {
    check_lpips("LPIPS 1ch", &[2, 16, 20, 1], false);
    check_lpips("LPIPS 3ch", &[2, 17, 16, 3], false);
}

#[test]
fn lpips_input_gradients_over_slices() {
    // Three different slice shapes (three batches) and a cube (one batch).
    check_lpips("LPIPS 3D 16×17×18", &[1, 16, 17, 18, 1], true);
    check_lpips("LPIPS 3D cube", &[1, 16, 16, 16, 1], true);
}

#[test]
fn lpips_single_branch_matches_joint() {
    // The one-gradient paths (the stage-1 loss uses Need::TARGET) agree with the joint pass.
    let mut lp = Lpips::new(NARROW, &mut Init::random(5)).unwrap();
    let (a, b) = (randn(&[2, 16, 16, 1], 6), randn(&[2, 16, 16, 1], 7));
    let dp = Tensor::from_vec(&[2], vec![0.7, -1.3]).unwrap();
    let p_joint = lp.forward(&a, &b, Need::BOTH).unwrap().to_f32_vec();
    let joint = lp.backward(&dp).unwrap();
    for need in [Need::INPUT, Need::TARGET] {
        let p = lp.forward(&a, &b, need).unwrap().to_f32_vec();
        assert_eq!(
            p, p_joint,
            "{need:?}: the distance does not depend on batching"
        );
        let g = lp.backward(&dp).unwrap();
        let (got, want) = if need.input {
            (g.input.unwrap(), joint.input.as_ref().unwrap())
        } else {
            (g.target.unwrap(), joint.target.as_ref().unwrap())
        };
        let err = got
            .to_f32_vec()
            .iter()
            .zip(want.to_f32_vec())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-6, "{need:?}: gradients differ by {err}");
    }
}

#[test]
fn lpips_refuses_bad_inputs() {
    let lp = Lpips::new(NARROW, &mut Init::random(1)).unwrap();
    let err = lp
        .distance(
            &randn(&[1, 16, 16, 2], 1),
            &randn(&[1, 16, 16, 2], 2),
            Need::NONE,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 or 3 channels"), "{err}");
    let err = lp
        .distance(
            &randn(&[1, 8, 8, 1], 1),
            &randn(&[1, 8, 8, 1], 2),
            Need::NONE,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("too small"), "{err}");
    let err = Lpips::require(None, None).unwrap_err().to_string();
    assert!(
        err.contains("vgg16-397923af.pth") && err.contains("vgg.pth"),
        "{err}"
    );
}

// ------------------------------------------------------------------------- weight files

fn vgg_state(lp: &mut Lpips) -> StateDict {
    // torchvision names: `features.{index}.weight|bias`.
    let mut sd = StateDict::new("test");
    lp.net.visit_params("", &mut |key, p| {
        let (_, rest) = key.split_once('.').unwrap();
        sd.insert(
            format!("features.{rest}"),
            NamedTensor::from_f32(p.torch_shape(), p.to_torch()),
        )
        .unwrap();
    });
    sd.insert(
        "classifier.0.weight".into(),
        NamedTensor::from_f32(vec![2, 2], vec![0.0; 4]),
    )
    .unwrap();
    sd
}

fn lin_state(lp: &Lpips) -> StateDict {
    let mut sd = StateDict::new("test");
    for (k, p) in lp.lin.iter().enumerate() {
        sd.insert(
            format!("lin{k}.model.1.weight"),
            NamedTensor::from_f32(p.torch_shape(), p.to_torch()),
        )
        .unwrap();
    }
    sd
}

#[test]
fn weight_files_load_and_errors_name_file_and_key() {
    let dir = std::env::temp_dir().join(format!("medvae-lpips-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut src = Lpips::new(NARROW, &mut Init::random(9)).unwrap();
    let plain = TorchSaveOptions {
        layout: TorchLayout::PlainStateDict,
        ..Default::default()
    };
    let vgg = dir.join("vgg16.pth");
    let lin = dir.join("vgg.pth");
    save_torch(&vgg, &vgg_state(&mut src), plain).unwrap();
    save_torch(&lin, &lin_state(&src), plain).unwrap();

    // A round trip through torch.save files gives the same network.
    let mut dst = Lpips::new(NARROW, &mut Init::Zeros).unwrap();
    dst.load_vgg16(&vgg).unwrap();
    dst.load_lin(&lin).unwrap();
    let (a, b) = (randn(&[1, 16, 16, 3], 1), randn(&[1, 16, 16, 3], 2));
    assert_eq!(
        src.distance(&a, &b, Need::NONE).unwrap().0.to_f32_vec(),
        dst.distance(&a, &b, Need::NONE).unwrap().0.to_f32_vec()
    );

    // Missing key.
    let mut sd = vgg_state(&mut src);
    let mut pruned = StateDict::new("test");
    for (k, t) in sd.iter() {
        if k != "features.28.weight" {
            pruned.insert(k.to_string(), t.clone()).unwrap();
        }
    }
    let missing = dir.join("missing.safetensors");
    save_safetensors(&missing, &pruned).unwrap();
    let err = dst.load_vgg16(&missing).unwrap_err().to_string();
    assert!(
        err.contains("features.28.weight") && err.contains("missing.safetensors"),
        "{err}"
    );

    // Mis-shaped key: the full-width VGG16 file into the narrow network.
    sd = vgg_state(&mut Lpips::new([5, 6, 8, 8, 8], &mut Init::random(3)).unwrap());
    let wrong = dir.join("wrong.pth");
    save_torch(&wrong, &sd, plain).unwrap();
    let err = dst.load_vgg16(&wrong).unwrap_err().to_string();
    assert!(
        err.contains("features.0.weight") && err.contains("wrong.pth") && err.contains("shape"),
        "{err}"
    );

    // A lin file with a missing layer.
    let mut lin_sd = StateDict::new("test");
    for (k, t) in lin_state(&src).iter() {
        if k != "lin3.model.1.weight" {
            lin_sd.insert(k.to_string(), t.clone()).unwrap();
        }
    }
    let bad_lin = dir.join("bad_lin.pth");
    save_torch(&bad_lin, &lin_sd, plain).unwrap();
    let err = dst.load_lin(&bad_lin).unwrap_err().to_string();
    assert!(
        err.contains("lin3.model.1.weight") && err.contains("bad_lin.pth"),
        "{err}"
    );

    // Not a checkpoint at all.
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let err = dst.load_vgg16(&junk).unwrap_err().to_string();
    assert!(err.contains("junk.pth"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The real LPIPS lin weights (`lpips/weights/v0.1/vgg.pth` of the `lpips` wheel) load through
/// the safe unpickler. Needs the file: `MEDVAE_LPIPS_LIN=/path/to/vgg.pth`.
#[test]
#[ignore = "needs the lpips wheel's vgg.pth in $MEDVAE_LPIPS_LIN"]
fn real_lpips_lin_file_loads() {
    let path = std::env::var_os("MEDVAE_LPIPS_LIN").expect("MEDVAE_LPIPS_LIN");
    let mut lp = Lpips::new(medvae_model::losses::VGG16_WIDTHS, &mut Init::Zeros).unwrap();
    lp.load_lin(std::path::Path::new(&path)).unwrap();
    let w0 = lp.lin[0].value.to_f32_vec();
    assert_eq!(w0.len(), 64);
    assert!(
        w0.iter().all(|&v| v > 0.0),
        "trained LPIPS weights are positive"
    );
}

// ------------------------------------------------------------------- discriminator step

struct DiscProbe {
    d: NLayerDiscriminator,
}

impl Parameters for DiscProbe {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.d.visit_params(prefix, f);
    }
}

/// The loss and its rounding scale: each logit enters it once, with weight ½ / count, and
/// carries the relative rounding error of the network (the hinge's `1 ±` is exact).
fn disc_objective(p: &mut DiscProbe, inputs: &Named, ctx: &mut Ctx) -> (f64, f64) {
    let s = discriminator_step(&mut p.d, &inputs["real"], &inputs["fake"], 1.0, ctx).unwrap();
    let mut m2 = 0.0;
    for l in [&s.logits_real, &s.logits_fake] {
        let v = l.to_f32_vec();
        let w = 0.5 / v.len() as f64;
        m2 += v.iter().map(|&x| (x as f64 * w).powi(2)).sum::<f64>();
    }
    (s.loss as f64, m2.sqrt())
}

fn disc_gradients(p: &mut DiscProbe, inputs: &Named, ctx: &mut Ctx) -> Named {
    discriminator_step(&mut p.d, &inputs["real"], &inputs["fake"], 1.0, ctx).unwrap();
    Named::new()
}

#[test]
fn discriminator_hinge_step_gradients() {
    // The reference initialisation: small logits, inside both hinges, where the loss is
    // smooth (the hinge's corner is covered by the golden case).
    let d = NLayerDiscriminator::new(1, 4, 2, &mut Init::random(4)).unwrap();
    let mut s = System {
        model: DiscProbe { d },
        inputs: BTreeMap::from([
            ("real".to_string(), randn(&[2, 16, 16, 1], 41)),
            ("fake".to_string(), randn(&[2, 16, 16, 1], 42)),
        ]),
        objective: disc_objective,
        gradients: disc_gradients,
        ctx: || Ctx::train(0),
        noise_depth: 32.0,
    };
    let checks = s.check_steps(&[3e-2, 1e-2, 3e-3], 7, TOL);
    assert_checks_with("hinge step", &checks, TOL, 0.8, &["main.0.weight"]);
}

// -------------------------------------------------------------------- stage-1 generator
//
// The generator loss is checked in two parts, each against its own rounding scale:
// * the reconstruction terms `nll + kl_weight·kl` (a step before `disc_start`), through L1,
//   LPIPS, the KL, `logvar` and the whole autoencoder backward;
// * the adversarial term: a step after `disc_start` minus the step before is
//   `d_weight · ∂g_loss/∂θ` (the reference detaches `d_weight`), checked against finite
//   differences of `g_loss`, and `d_weight` itself against its definition from the two
//   gradients at `decoder.conv_out.weight`.
// The image sits far above any reconstruction, so the L1 term has no corner under the steps.

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

fn stage1_probe() -> (Stage1Probe, Named) {
    let cfg = ModelConfig {
        dims: 2,
        in_channels: 1,
        out_ch: 1,
        ch: 32,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_levels: vec![],
        z_channels: 1,
        embed_dim: 1,
        dropout: 0.0,
        lora_rank: None,
        latent_head: false,
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
        // LPIPS is piecewise smooth (ReLU, max pool) and its share of the gradient would carry
        // their finite-difference error; at 0.05 its share (a wrong C·H·W scale would be 256×
        // off) still moves the gradients by far more than the tolerance. LPIPS' own gradient
        // is checked above and against the golden cases.
        perceptual_weight: 0.05,
        ..Stage1Config::default()
    };
    let lpips = Lpips::new(NARROW, &mut Init::random(51)).unwrap();
    let disc = NLayerDiscriminator::new(1, 4, 2, &mut Init::random(52)).unwrap();
    let loss = Stage1Loss::new(config, Some(lpips), disc).unwrap();
    // The image far above any reconstruction: |x − rec| = x − rec, no L1 corner.
    let mut x = randn_scaled(&[2, 16, 16, 1], 53, 0.3);
    x.f32s_mut("test")
        .unwrap()
        .iter_mut()
        .for_each(|v| *v += 4.0);
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
    let (model, inputs) = stage1_probe();
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
    let (model, inputs) = stage1_probe();
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
