//! LPIPS and the discriminator step: finite-difference checks of LPIPS' input gradients (2D, 1
//! and 3 channels, and over the slices of a volume) and of the discriminator hinge step;
//! single-branch LPIPS equals the joint pass; bad inputs and weight-file errors name what is
//! wrong. The stage-1 generator loss is in stage1_loss.rs. See `common` for the method.

mod common;

use common::{assert_checks_with, randn, Named, System};
use medvae_model::blocks::NLayerDiscriminator;
use medvae_model::layer::{Ctx, ParamVisitor, Parameters};
use medvae_model::layers::Init;
use medvae_model::losses::lpips3d::{slices_backward, slices_forward};
use medvae_model::losses::{discriminator_step, Lpips, Need, VGG16_WIDTHS};
use medvae_runtime::checkpoint::{
    load_checkpoint, save_safetensors, save_torch, NamedTensor, StateDict, TorchLayout,
    TorchSaveOptions,
};
use medvae_runtime::Tensor;
use std::collections::BTreeMap;

/// Kinks (ReLU, max pool) and small gradients next to the rounding: see each use.
const TOL_COARSE: f64 = 1e-2;
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
/// max-pool switches under the steps make LPIPS piecewise smooth, which costs finite
/// differences a few 0.1 % (each direction takes the best of several steps; a wrong gradient
/// disagrees at every step), so the check is at 1 %: wiring errors (the 1-channel broadcast,
/// the slice gather, the halves of a joint batch) are O(1). The per-layer distance, where the
/// arithmetic is, is checked exactly in f64 (the `medvae_kernels::cpu::lpips` unit tests), and the whole
/// against PyTorch by the golden cases.
fn check_lpips(label: &str, shape: &[usize], volume: bool) {
    let mut all = Vec::new();
    for seed in [10, 20, 30] {
        let mut s = lpips_system(shape, volume, seed);
        all.extend(s.check_steps(&[3e-2, 1e-2, 3e-3], seed, TOL_COARSE));
    }
    assert_checks_with(label, &all, TOL_COARSE, 0.8, &[]);
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

/// Distances and input gradients of `lp` on fixed images.
fn lpips_outputs(lp: &mut Lpips) -> (Vec<f32>, Vec<f32>) {
    let (a, b) = (randn(&[2, 16, 16, 1], 31), randn(&[2, 16, 16, 1], 32));
    let dp = Tensor::from_vec(&[2], vec![1.0, -0.5]).unwrap();
    let p = lp.forward(&a, &b, Need::INPUT).unwrap().to_f32_vec();
    let g = lp.backward(&dp).unwrap().input.unwrap().to_f32_vec();
    (p, g)
}

/// Largest difference between two runs' distances and gradients.
fn largest_difference(a: &(Vec<f32>, Vec<f32>), b: &(Vec<f32>, Vec<f32>)) -> f32 {
    assert_eq!((a.0.len(), a.1.len()), (b.0.len(), b.1.len()));
    let pairs = a.0.iter().zip(&b.0).chain(a.1.iter().zip(&b.1));
    pairs.map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Negate the weights of the second slice in place (as a user editing the network would). Not
/// a scale, which LPIPS' feature normalisation would undo, nor a deeper slice, where random
/// weights leave the biases dominant.
fn negate_second_slice(lp: &mut Lpips) {
    lp.net.visit_params("", &mut |key, p| {
        if key.starts_with("slice2") && key.ends_with("weight") {
            for v in p.value.f32s_mut("test").unwrap() {
                *v = -*v;
            }
        }
    });
}

#[test]
fn lpips_follows_reloaded_and_edited_weights() {
    // The frozen convolutions keep their weights' Winograd transforms between calls: a network
    // used before its weights are loaded, or edited in place, must still compute with the new
    // weights (compared with a network that never ran with the old ones).
    let dir = tempfile::tempdir().unwrap();
    let vgg = dir.path().join("vgg16.pth");
    let plain = TorchSaveOptions {
        layout: TorchLayout::PlainStateDict,
        ..Default::default()
    };
    let mut fresh = Lpips::new(NARROW, &mut Init::random(33)).unwrap();
    save_torch(&vgg, &vgg_state(&mut fresh), plain).unwrap();
    let mut used = Lpips::new(NARROW, &mut Init::random(34)).unwrap();
    for lin in used.lin.iter_mut().zip(&fresh.lin) {
        lin.0.value = lin.1.value.clone();
    }
    let before = lpips_outputs(&mut used);
    used.load_vgg16(&vgg).unwrap();
    let want = lpips_outputs(&mut fresh);
    assert!(
        largest_difference(&before, &want) > 1e-3,
        "the weights must matter"
    );
    let after = largest_difference(&lpips_outputs(&mut used), &want);
    assert_eq!(after, 0.0, "after loading new weights: off by {after}");

    negate_second_slice(&mut used);
    let mut edited = Lpips::new(NARROW, &mut Init::random(33)).unwrap();
    negate_second_slice(&mut edited);
    let want = lpips_outputs(&mut edited);
    assert!(largest_difference(&lpips_outputs(&mut fresh), &want) > 1e-3);
    let after = largest_difference(&lpips_outputs(&mut used), &want);
    assert_eq!(after, 0.0, "after editing weights in place: off by {after}");
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

/// The `lpips` wheel's `vgg.pth` (and torchvision's 2017 `vgg16-397923af.pth`) are legacy
/// (pre-1.6, non-zip) `torch.save` streams. LPIPS-shaped legacy files written by torch
/// (runtime/tests/data/gen_legacy_fixtures.py: lin weights at the real VGG16 widths, a
/// torchvision-keyed VGG16 at tiny widths) load through `load_lin` / `load_vgg16` with exactly
/// torch's values; a truncated one is an error naming the file.
#[test]
fn legacy_torch_save_files_load() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data");
    let want = load_checkpoint(&data.join("legacy_lpips_expected.safetensors")).unwrap();

    let mut lp = Lpips::new(VGG16_WIDTHS, &mut Init::Zeros).unwrap();
    lp.load_lin(&data.join("legacy_lpips_lin.pth")).unwrap();
    for (k, p) in lp.lin.iter().enumerate() {
        let key = format!("lin{k}.model.1.weight");
        assert_eq!(
            p.value.to_f32_vec(),
            want.get(&key).unwrap().as_f32().unwrap(),
            "{key}"
        );
    }

    // The tiny VGG: the legacy file and torch's safetensors copy give the same network.
    let tiny = [4; 5];
    let mut from_legacy = Lpips::new(tiny, &mut Init::Zeros).unwrap();
    from_legacy
        .load_vgg16(&data.join("legacy_lpips_vgg16_tiny.pth"))
        .unwrap();
    let mut from_safetensors = Lpips::new(tiny, &mut Init::Zeros).unwrap();
    from_safetensors
        .load_vgg16(&data.join("legacy_lpips_expected.safetensors"))
        .unwrap();
    let mut a = Vec::new();
    from_legacy.visit_params("", &mut |k, p| a.push((k.to_owned(), p.value.to_f32_vec())));
    let mut b = Vec::new();
    from_safetensors.visit_params("", &mut |k, p| b.push((k.to_owned(), p.value.to_f32_vec())));
    assert_eq!(a, b);
    assert!(a.iter().any(|(_, v)| v.iter().any(|&x| x != 0.0)));

    let dir = std::env::temp_dir().join(format!("medvae-lpips-legacy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vgg.pth");
    let bytes = std::fs::read(data.join("legacy_lpips_lin.pth")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = lp.load_lin(&path).unwrap_err().to_string();
    assert!(err.contains("vgg.pth") && err.contains("key `lin"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

// ------------------------------------------------------------------- discriminator step

/// D's biases after the first convolution and after each BatchNorm: every LeakyReLU input sits
/// 4 standard deviations (of the normalised activations) on its linear side, so D has no kink
/// under the finite-difference steps (D's layers are checked one by one in fd_blocks.rs and
/// against the golden case; this checks the step's wiring). The logit convolution then sees a
/// constant `D_SHIFT` in every channel: its weights are made zero-sum over the channels of
/// each tap, so the constant cancels exactly (also at the zero-padded border, where whole taps
/// are 0) and the logits stay inside both hinges.
const D_SHIFT: f32 = 4.0;

fn linear_regime_discriminator(disc: &mut NLayerDiscriminator) {
    disc.visit_params("", &mut |key, p| {
        // main.0: first conv, main.3 / main.6: BatchNorms, main.8: the logit conv.
        if key.ends_with(".bias") && key != "main.8.bias" {
            p.value = Tensor::from_vec(p.value.shape(), vec![D_SHIFT; p.value.numel()]).unwrap();
        }
        if key == "main.8.weight" {
            // Engine layout [kd, kh, kw, Cin, Cout = 1]: one row of Cin per tap.
            let mut v = p.value.to_f32_vec();
            let cin = p.value.shape()[3];
            for tap in v.chunks_mut(cin) {
                let mean = tap.iter().sum::<f32>() / cin as f32;
                tap.iter_mut().for_each(|w| *w -= mean);
            }
            p.value = Tensor::from_vec(p.value.shape(), v).unwrap();
        }
    });
}

struct DiscProbe {
    d: NLayerDiscriminator,
}

impl Parameters for DiscProbe {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.d.visit_params(prefix, f);
    }
}

/// The loss and its rounding scale: each logit enters with weight ½ / count and carries the
/// rounding of a sum of terms `≈ D_SHIFT·w` (the constant cancels, its rounding does not),
/// of size `D_SHIFT·‖w‖₂` for independent roundings.
fn disc_objective(p: &mut DiscProbe, inputs: &Named, ctx: &mut Ctx) -> (f64, f64) {
    let s = discriminator_step(&mut p.d, &inputs["real"], &inputs["fake"], 1.0, ctx).unwrap();
    for l in [&s.logits_real, &s.logits_fake] {
        assert!(
            l.to_f32_vec().iter().all(|v| v.abs() < 1.0),
            "logits inside the hinges"
        );
    }
    let mut w8 = 0.0;
    p.d.visit_params("", &mut |k, q| {
        if k == "main.8.weight" {
            w8 = q
                .value
                .to_f32_vec()
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
        }
    });
    let count = s.logits_real.numel() as f64;
    (
        s.loss as f64,
        0.5 * D_SHIFT as f64 * w8 * (2.0 / count).sqrt(),
    )
}

fn disc_gradients(p: &mut DiscProbe, inputs: &Named, ctx: &mut Ctx) -> Named {
    discriminator_step(&mut p.d, &inputs["real"], &inputs["fake"], 1.0, ctx).unwrap();
    Named::new()
}

#[test]
fn discriminator_hinge_step_gradients() {
    let mut d = NLayerDiscriminator::new(1, 4, 2, &mut Init::random(4)).unwrap();
    linear_regime_discriminator(&mut d);
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
    // The reference initialisation's small logits make every direction small next to the
    // rounding of the logit sums: checked at 1 % (a wiring error, such as the halves'
    // factor, the order of the calls or a lost accumulation, is O(1)).
    let checks = s.check_steps(&[1e-1, 3e-2, 1e-2], 7, TOL_COARSE);
    assert_checks_with("hinge step", &checks, TOL_COARSE, 0.8, &[]);
}
