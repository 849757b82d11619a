//! The ViT image tower and the stage-2 BiomedCLIP latent loss: finite-difference checks of the
//! tower's input (and parameter) gradients and of the loss's gradient w.r.t. the latent head,
//! on tiny shapes; loading open_clip checkpoints, with errors that name the file and the key.

mod common;

use common::{assert_checks_with, randn, randn_scaled, tiny_head_ae, System};
use medvae_model::autoencoder::{AutoencoderKL, Sampling};
use medvae_model::layer::{Ctx, Layer, ParamVisitor, Parameters};
use medvae_model::layers::state::{export_grads, export_params};
use medvae_model::layers::Init;
use medvae_model::losses::stage2::{stage2_step, BiomedClipLatentLoss};
use medvae_model::vit::load::{load_open_clip_tower, OPEN_CLIP_VISUAL_PREFIX};
use medvae_model::vit::{VisionTower, VitConfig};
use medvae_runtime::checkpoint::{
    save_torch, NamedTensor, StateDict, TorchLayout, TorchSaveOptions,
};
use medvae_runtime::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;

const TOL: f64 = 1e-3;
/// Steps relative to each tensor's RMS; each direction keeps the best of them (`check_steps`).
const STEPS: [f32; 3] = [3e-2, 1e-2, 3e-3];
/// Rounding growth through the tower (two blocks of attention, GELU and LayerNorm) and, for the
/// loss, the resize and the autoencoder's latent head in front of it.
const NOISE_DEPTH: f64 = 16.0;

/// An image side that leaves pixels past the last whole patch (they get zero gradient), a
/// bias on the head, the MLP not a multiple of the width.
fn ragged() -> VitConfig {
    VitConfig {
        image_size: 10,
        patch: 4,
        in_chans: 3,
        width: 16,
        depth: 2,
        heads: 2,
        mlp_hidden: 24,
        embed_dim: 8,
        proj_bias: true,
    }
}

/// An exact grid and the golden tower's options (no head bias), head dimension 4.
fn exact() -> VitConfig {
    VitConfig {
        image_size: 8,
        patch: 4,
        in_chans: 3,
        width: 16,
        depth: 2,
        heads: 4,
        mlp_hidden: 64,
        embed_dim: 6,
        proj_bias: false,
    }
}

/// Non-trivial parameters: norm scales `1 + N(0, 0.2²)`, everything else `N(0, 0.2²)`.
fn randomise(model: &mut dyn Parameters, seed: u64) {
    let mut s = seed;
    model.visit_params("", &mut |key, p| {
        s += 1;
        let base = if key.contains("norm") && key.ends_with(".weight") {
            1.0
        } else {
            0.0
        };
        let noise = randn_scaled(p.value.shape(), s, 0.2).to_f32_vec();
        for (v, n) in p.value.f32s_mut("test").unwrap().iter_mut().zip(noise) {
            *v = base + n;
        }
    });
}

fn tower(cfg: &VitConfig, seed: u64) -> VisionTower {
    let mut t = VisionTower::new(cfg, &mut Init::Zeros).unwrap();
    randomise(&mut t, seed);
    t
}

/// The tower with a fixed upstream gradient `g` of its features.
struct TowerProbe {
    tower: VisionTower,
    g: Tensor,
}

impl Parameters for TowerProbe {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.tower.visit_params(prefix, f);
    }
}

fn tower_objective(
    p: &mut TowerProbe,
    inputs: &BTreeMap<String, Tensor>,
    ctx: &mut Ctx,
) -> (f64, f64) {
    let y = p.tower.forward(&inputs["x"], ctx).unwrap();
    common::dot(&y, &p.g)
}

fn tower_gradients(
    p: &mut TowerProbe,
    inputs: &BTreeMap<String, Tensor>,
    ctx: &mut Ctx,
) -> BTreeMap<String, Tensor> {
    p.tower.forward(&inputs["x"], ctx).unwrap();
    let dx = p.tower.backward(&p.g).unwrap();
    BTreeMap::from([("x".to_string(), dx)])
}

fn tower_system(tower: VisionTower, n: usize) -> System<TowerProbe> {
    let s = tower.config.image_size;
    let x = randn(&[n, s, s, tower.config.in_chans], 5);
    let g = randn(&[n, tower.config.embed_dim], 99);
    System {
        model: TowerProbe { tower, g },
        inputs: BTreeMap::from([("x".to_string(), x)]),
        objective: tower_objective,
        gradients: tower_gradients,
        ctx: Ctx::eval_with_grad,
        noise_depth: NOISE_DEPTH,
    }
}

#[test]
fn tower_input_and_parameter_gradients_match_finite_differences() {
    for (label, cfg) in [("ragged grid", ragged()), ("exact grid", exact())] {
        let mut sys = tower_system(tower(&cfg, 7), 2);
        let checks = sys.check_steps(&STEPS, 1000, TOL);
        // The image, the embeddings and the head are the tower's own glue: they must resolve.
        assert_checks_with(
            &format!("vit {label}"),
            &checks,
            TOL,
            0.8,
            &[
                "x",
                "trunk.pos_embed",
                "trunk.patch_embed.proj.weight",
                "head.proj.weight",
            ],
        );
    }
}

#[test]
fn a_one_percent_error_in_the_tower_gradient_is_caught() {
    let mut sys = tower_system(tower(&exact(), 7), 2);
    for name in ["x", "trunk.blocks.0.attn.qkv.weight"] {
        let checks = sys.check(1e-2, 1000, Some(name));
        let c = checks.iter().find(|c| c.what == name).unwrap();
        assert!(
            !c.passes(TOL),
            "a 1 % error in d/d {name} went unnoticed: {c:?}"
        );
    }
}

#[test]
fn a_frozen_tower_gives_the_same_input_gradient_and_no_parameter_gradients() {
    let cfg = ragged();
    let mut sys = tower_system(tower(&cfg, 3), 2);
    let mut ctx = Ctx::eval_with_grad();
    let live = tower_gradients(&mut sys.model, &sys.inputs, &mut ctx)["x"].to_f32_vec();
    sys.model.tower.freeze();
    medvae_model::layer::zero_grads(&mut sys.model.tower);
    let frozen = tower_gradients(&mut sys.model, &sys.inputs, &mut ctx)["x"].to_f32_vec();
    assert_eq!(live, frozen);
    assert!(export_grads(&mut sys.model.tower).is_empty());
    // The pixels past the last whole patch (rows and columns 8, 9) get no gradient.
    let s = cfg.image_size;
    for (i, v) in frozen.iter().enumerate() {
        let (y, x) = ((i / 3 / s) % s, (i / 3) % s);
        if y >= 8 || x >= 8 {
            assert_eq!(*v, 0.0, "pixel ({y}, {x})");
        }
    }
}

struct Stage2 {
    ae: AutoencoderKL,
    loss: BiomedClipLatentLoss,
    eps: Tensor,
}

impl Parameters for Stage2 {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.ae.visit_params(prefix, f);
    }
}

/// The f32 rounding scale of the loss: the latent branch's features `b` carry a relative
/// rounding error each, which moves `Σ‖a − b‖²/B` by `Σ|2(a − b)·b|/B` (the image branch is
/// the same computation on every evaluation, so its rounding does not change the difference).
fn loss_with_noise(loss: &mut BiomedClipLatentLoss, x: &Tensor, latent: &Tensor) -> (f64, f64) {
    let (v, _) = loss.forward_backward(x, latent, false).unwrap();
    let a = loss.image_features(x).unwrap().to_f32_vec();
    let b = loss.latent_features(latent).unwrap().to_f32_vec();
    let scale: f64 = a
        .iter()
        .zip(&b)
        .map(|(&p, &q)| (2.0 * (p - q) as f64 * q as f64).abs())
        .sum();
    (v.loss as f64, scale / x.shape()[0] as f64)
}

fn stage2_objective(
    s: &mut Stage2,
    inputs: &BTreeMap<String, Tensor>,
    ctx: &mut Ctx,
) -> (f64, f64) {
    let x = &inputs["x"];
    let moments = s.ae.encode(x, ctx).unwrap();
    let (z, _) =
        s.ae.sample(&moments, Sampling::Eps(s.eps.clone()), ctx)
            .unwrap();
    let latent = s.ae.latent(&z, ctx).unwrap();
    loss_with_noise(&mut s.loss, x, &latent)
}

fn stage2_gradients(
    s: &mut Stage2,
    inputs: &BTreeMap<String, Tensor>,
    ctx: &mut Ctx,
) -> BTreeMap<String, Tensor> {
    let sampling = Sampling::Eps(s.eps.clone());
    stage2_step(&mut s.ae, &mut s.loss, &inputs["x"], sampling, ctx).unwrap();
    BTreeMap::new()
}

/// The loss as a function of the latent (tower, transform and channel mean; no ReLU kinks).
struct LatentProbe {
    loss: BiomedClipLatentLoss,
}

impl Parameters for LatentProbe {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.loss.tower.visit_params(prefix, f);
    }
}

fn latent_objective(
    p: &mut LatentProbe,
    inputs: &BTreeMap<String, Tensor>,
    _ctx: &mut Ctx,
) -> (f64, f64) {
    loss_with_noise(&mut p.loss, &inputs["x"], &inputs["latent"])
}

fn latent_gradients(
    p: &mut LatentProbe,
    inputs: &BTreeMap<String, Tensor>,
    _ctx: &mut Ctx,
) -> BTreeMap<String, Tensor> {
    let (_, d) = p
        .loss
        .forward_backward(&inputs["x"], &inputs["latent"], true)
        .unwrap();
    BTreeMap::from([("latent".to_string(), d.unwrap())])
}

#[test]
fn stage2_loss_gradient_wrt_the_latent_matches_finite_differences() {
    // Image 16×12 and latent 8×6 (3 channels, averaged) both become 10×8 (shorter side to 8:
    // one resized down, one up) and are centre-cropped to the tower's 8×8; the RGB image case
    // runs too.
    for (label, x_shape) in [("grey", [2, 16, 12, 1]), ("rgb", [2, 16, 12, 3])] {
        let mut sys = System {
            model: LatentProbe {
                loss: BiomedClipLatentLoss::new(tower(&exact(), 21)),
            },
            inputs: BTreeMap::from([
                ("x".to_string(), randn(&x_shape, 31)),
                ("latent".to_string(), randn_scaled(&[2, 8, 6, 3], 32, 3.0)),
            ]),
            objective: latent_objective,
            gradients: latent_gradients,
            ctx: Ctx::eval_with_grad,
            noise_depth: NOISE_DEPTH,
        };
        let checks = sys.check_steps(&STEPS, 3000, TOL);
        assert_eq!(checks.len(), 1, "a frozen tower has no parameter gradients");
        assert_checks_with(
            &format!("stage-2 d/d latent {label}"),
            &checks,
            TOL,
            1.0,
            &["latent"],
        );
    }
}

#[test]
fn stage2_loss_gradient_reaches_the_latent_head_exactly() {
    // A non-square image: 16×12 → latent 8×6; both resized to 10×8 (shorter side 8) and
    // centre-cropped to the tower's 8×8, so resize up/down and the crop are all exercised.
    let mut t = tower(&exact(), 21);
    t.freeze();
    let x = randn(&[2, 16, 12, 1], 31);
    let mut sys = System {
        model: Stage2 {
            ae: tiny_head_ae(2),
            loss: BiomedClipLatentLoss::new(t),
            eps: randn(&[2, 8, 6, 2], 41),
        },
        inputs: BTreeMap::from([("x".to_string(), x)]),
        objective: stage2_objective,
        gradients: stage2_gradients,
        ctx: Ctx::eval_with_grad,
        noise_depth: NOISE_DEPTH,
    };
    let checks = sys.check_steps(&STEPS, 2000, TOL);
    let names: Vec<&str> = checks.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        names,
        [
            "channel_ds.0.weight",
            "channel_ds.0.bias",
            "channel_ds.2.weight",
            "channel_ds.2.bias",
            "channel_ds.4.weight",
            "channel_ds.4.bias",
            "channel_proj.weight",
            "channel_proj.bias"
        ],
        "only the latent head is trained"
    );
    // The head's gradients are small next to the loss's rounding scale (the latent reaches
    // the tower divided by 4.6 and averaged), and `channel_ds` has ReLU kinks that long steps
    // cross: its directions agree but only `channel_proj` resolves a 1 % error. The sharp
    // checks of this path are the latent gradient above and the head's own FD check
    // (fd_blocks.rs); the golden case checks every head gradient to ~1e-6.
    assert_checks_with(
        "stage-2 loss",
        &checks,
        TOL,
        0.25,
        &["channel_proj.weight", "channel_proj.bias"],
    );
}

#[test]
fn stage2_refuses_images_with_a_wrong_channel_count() {
    let mut loss = BiomedClipLatentLoss::new(tower(&exact(), 1));
    let latent = randn(&[1, 4, 4, 1], 2);
    let err = loss
        .forward_backward(&randn(&[1, 8, 8, 2], 3), &latent, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 (grey, expanded) or 3 channels, got 2"),
        "{err}"
    );
    let err = loss
        .forward_backward(&randn(&[2, 8, 8, 1], 3), &latent, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("same non-empty batch"), "{err}");
}

#[test]
fn the_tower_refuses_images_of_another_size() {
    let mut t = tower(&exact(), 1);
    let err = t
        .forward(&randn(&[1, 9, 8, 3], 2), &mut Ctx::eval())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, 8, 8, 3]"), "{err}");
}

/// A scratch folder for checkpoint files of one test, removed when dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("medvae-vit-{name}-"))
        .tempdir()
        .expect("create a scratch folder")
}

/// An open_clip-style state dict of `tower`: `visual.*` plus text-tower keys to be ignored.
fn open_clip_state(tower: &mut VisionTower) -> Vec<(String, NamedTensor)> {
    let mut entries: Vec<(String, NamedTensor)> = export_params(tower)
        .into_iter()
        .map(|t| {
            (
                format!("{OPEN_CLIP_VISUAL_PREFIX}{}", t.key),
                NamedTensor::from_f32(t.shape, t.data),
            )
        })
        .collect();
    entries.push((
        "logit_scale".into(),
        NamedTensor::from_f32(vec![], vec![4.6]),
    ));
    entries.push((
        "text.transformer.embeddings.word_embeddings.weight".into(),
        NamedTensor::from_f32(vec![3, 2], vec![0.5; 6]),
    ));
    entries
}

fn write(path: &std::path::Path, entries: Vec<(String, NamedTensor)>) {
    let mut sd = StateDict::new(path.display().to_string());
    for (k, t) in entries {
        sd.insert(k, t).unwrap();
    }
    let opts = TorchSaveOptions {
        layout: TorchLayout::PlainStateDict,
        ..Default::default()
    };
    save_torch(path, &sd, opts).unwrap();
}

#[test]
fn an_open_clip_checkpoint_loads_into_a_frozen_tower() {
    let cfg = ragged();
    let mut src = tower(&cfg, 5);
    let dir = scratch("ok");
    let path = dir.path().join("open_clip_pytorch_model.bin");
    write(&path, open_clip_state(&mut src));
    let mut loaded = load_open_clip_tower(&path, &cfg).unwrap();
    let x = randn(&[2, 10, 10, 3], 6);
    let want = src.forward(&x, &mut Ctx::eval()).unwrap().to_f32_vec();
    let got = loaded.forward(&x, &mut Ctx::eval()).unwrap().to_f32_vec();
    assert_eq!(want, got);
    let mut trainable = 0;
    loaded.visit_params("", &mut |_, p| trainable += p.trainable as usize);
    assert_eq!(trainable, 0, "the loaded tower is frozen");
}

#[test]
fn a_missing_or_misshapen_tower_key_is_an_error_naming_file_and_key() {
    let cfg = exact();
    let dir = scratch("bad");
    let mut src = tower(&cfg, 5);

    let missing = dir.path().join("missing.bin");
    let mut entries = open_clip_state(&mut src);
    entries.retain(|(k, _)| k != "visual.trunk.blocks.1.attn.qkv.weight");
    write(&missing, entries);
    let err = load_open_clip_tower(&missing, &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(
        err.contains("missing key `visual.trunk.blocks.1.attn.qkv.weight`"),
        "{err}"
    );

    let misshapen = dir.path().join("misshapen.bin");
    let mut entries = open_clip_state(&mut src);
    for (k, t) in entries.iter_mut() {
        if k == "visual.head.proj.weight" {
            *t = NamedTensor::from_f32(vec![7, 16], vec![0.0; 7 * 16]);
        }
    }
    write(&misshapen, entries);
    let err = load_open_clip_tower(&misshapen, &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&misshapen.display().to_string()), "{err}");
    assert!(
        err.contains("`visual.head.proj.weight` has shape [7, 16], the tower needs [6, 16]"),
        "{err}"
    );

    let foreign = dir.path().join("foreign.bin");
    let mut entries = open_clip_state(&mut src);
    entries.push((
        "visual.trunk.attn_pool.latent".into(),
        NamedTensor::from_f32(vec![1, 1, 16], vec![0.0; 16]),
    ));
    write(&foreign, entries);
    let err = load_open_clip_tower(&foreign, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unexpected key `visual.trunk.attn_pool.latent`"),
        "{err}"
    );

    let none = dir.path().join("no_file.bin");
    let err = load_open_clip_tower(&none, &cfg).unwrap_err().to_string();
    assert!(err.contains("no_file.bin"), "{err}");
}

/// Full-size BiomedCLIP tower (ViT-B/16, 224², batch 2), frozen: forward + backward to the
/// image, as stage 2 runs it. Compare with `scripts/torch_vit_bench.py` at the same threads
/// (`RAYON_NUM_THREADS=2`).
#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn vit_b16_forward_backward_timing() {
    let cfg = VitConfig::biomedclip();
    let mut t = VisionTower::new(&cfg, &mut Init::random(1)).unwrap();
    t.freeze();
    let x = randn(&[2, 224, 224, 3], 2);
    let g = randn(&[2, 512], 3);
    let mut time = |grad: bool| {
        let mut ms = Vec::new();
        for i in 0..6 {
            let start = std::time::Instant::now();
            let mut ctx = if grad {
                Ctx::eval_with_grad()
            } else {
                Ctx::eval()
            };
            t.forward(&x, &mut ctx).unwrap();
            if grad {
                t.backward(&g).unwrap();
            }
            if i > 0 {
                ms.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], ms[0])
    };
    let (fwd, fwd_min) = time(false);
    let (both, both_min) = time(true);
    println!(
        "vit_b16 batch 2, {} threads: forward {fwd:.0} ms (min {fwd_min:.0}), forward+backward-to-input {both:.0} ms (min {both_min:.0})",
        rayon::current_num_threads()
    );
}

/// A real `torch.save` open_clip checkpoint of the full ViT-B/16 tower and PyTorch's features
/// for it, from `scripts/make_vit_full_case.py DIR`; run with `MEDVAE_VIT_FULL=DIR`.
#[test]
#[ignore = "needs MEDVAE_VIT_FULL=DIR from scripts/make_vit_full_case.py"]
fn full_size_open_clip_checkpoint_matches_pytorch() {
    let Some(dir) = std::env::var_os("MEDVAE_VIT_FULL").map(PathBuf::from) else {
        panic!("set MEDVAE_VIT_FULL to the output folder of scripts/make_vit_full_case.py");
    };
    let mut t = load_open_clip_tower(
        &dir.join("open_clip_pytorch_model.bin"),
        &VitConfig::biomedclip(),
    )
    .unwrap();
    let case = medvae_runtime::golden::GoldenCase::load(&dir.join("vit/vit_b16_full.safetensors"))
        .unwrap();
    let x = case.tensor("in.x").unwrap();
    let (data, shape) = medvae_runtime::layout::to_channels_last(&x.data, &x.shape).unwrap();
    let y = t
        .forward(&Tensor::from_vec(&shape, data).unwrap(), &mut Ctx::eval())
        .unwrap();
    let want = &case.tensor("out.features").unwrap().data;
    let err = medvae_runtime::golden::rel_error(&y.to_f32_vec(), want);
    println!("full-size features from the .bin: rel error {err:.1e}");
    assert!(err < 1e-4, "rel error {err}");
}
