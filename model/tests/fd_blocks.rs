//! Finite-difference checks of every block's backward (input and parameter gradients), in 2D
//! and 3D, with LoRA, dropout and activation checkpointing. See `common` for the method.

mod common;

use common::{assert_checks, randn, randn_scaled, System};
use medvae_model::autoencoder::LatentHead;
use medvae_model::blocks::{
    AttnBlock, Downsample, MidBlock, NLayerDiscriminator, ResnetBlock, Upsample,
};
use medvae_model::layer::{Ctx, Layer, ParamVisitor, Parameters};
use medvae_model::layers::{Conv, GroupNorm, Init};
use std::collections::BTreeMap;

const TOL: f64 = 1e-3;
/// Finite-difference step, relative to each tensor's RMS.
const STEP: f32 = 3e-2;

/// A single-input layer with a fixed upstream gradient `g`.
struct Probe<L> {
    layer: L,
    g: medvae_runtime::Tensor,
}

impl<L: Layer> Parameters for Probe<L> {
    fn visit_params(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.layer.visit_params(prefix, f);
    }
}

fn objective<L: Layer>(
    p: &mut Probe<L>,
    inputs: &BTreeMap<String, medvae_runtime::Tensor>,
    ctx: &mut Ctx,
) -> (f64, f64) {
    let y = p.layer.forward(&inputs["x"], ctx).expect("forward");
    common::dot(&y, &p.g)
}

fn gradients<L: Layer>(
    p: &mut Probe<L>,
    inputs: &BTreeMap<String, medvae_runtime::Tensor>,
    ctx: &mut Ctx,
) -> BTreeMap<String, medvae_runtime::Tensor> {
    let y = p.layer.forward(&inputs["x"], ctx).expect("forward");
    assert_eq!(y.shape(), p.g.shape());
    let dx = p.layer.backward(&p.g).expect("backward");
    BTreeMap::from([("x".to_string(), dx)])
}

fn train_ctx() -> Ctx {
    Ctx::train(1234)
}

fn eval_ctx() -> Ctx {
    Ctx::eval_with_grad()
}

/// Build the probe: forward once to learn the output shape, draw `g`.
fn system<L: Layer>(mut layer: L, x: medvae_runtime::Tensor, ctx: fn() -> Ctx) -> System<Probe<L>> {
    let y = layer.forward(&x, &mut Ctx::eval()).expect("forward");
    let g = randn(y.shape(), 99);
    System {
        model: Probe { layer, g },
        inputs: BTreeMap::from([("x".to_string(), x)]),
        objective: objective::<L>,
        gradients: gradients::<L>,
        ctx,
        noise_depth: common::NOISE_DEPTH_BLOCK,
    }
}

/// Random non-trivial parameters (a zero-initialised LoRA branch would hide its gradients):
/// `N(0, 0.2²)`, norm scales around 1.
fn randomise(model: &mut dyn Parameters, seed: u64) {
    let mut s = seed;
    model.visit_params("", &mut |key, p| {
        s += 1;
        let is_norm_scale = key.ends_with("norm1.weight")
            || key.ends_with("norm2.weight")
            || key.ends_with("norm.weight");
        let base = if is_norm_scale { 1.0 } else { 0.0 };
        let noise = randn_scaled(p.value.shape(), s, 0.2).to_f32_vec();
        for (v, n) in p.value.f32s_mut("test").unwrap().iter_mut().zip(noise) {
            *v = base + n;
        }
    });
}

fn check<L: Layer>(label: &str, layer: L, x_shape: &[usize], ctx: fn() -> Ctx) {
    check_with_step(label, layer, x_shape, ctx, STEP)
}

fn check_with_step<L: Layer>(
    label: &str,
    mut layer: L,
    x_shape: &[usize],
    ctx: fn() -> Ctx,
    step: f32,
) {
    randomise(&mut layer, 7);
    let mut sys = system(layer, randn(x_shape, 5), ctx);
    let checks = sys.check(step, 1000, None);
    assert_checks(label, &checks, TOL);
}

fn init() -> Init {
    Init::Zeros
}

#[test]
fn conv_and_group_norm_layers() {
    check(
        "conv 3x3 s2 3D",
        Conv::square(3, 4, 6, 3, 2, 1, &mut init()).unwrap(),
        &[1, 5, 4, 6, 4],
        eval_ctx,
    );
    check(
        "group norm + silu",
        GroupNorm::new(64, true, &mut init()).unwrap(),
        &[2, 3, 5, 64],
        eval_ctx,
    );
    check(
        "group norm",
        GroupNorm::new(32, false, &mut init()).unwrap(),
        &[1, 2, 3, 4, 32],
        eval_ctx,
    );
}

#[test]
fn resnet_block_2d_and_3d() {
    check(
        "resnet 2D 32→64",
        ResnetBlock::new(2, 32, 64, 0.0, &mut init()).unwrap(),
        &[2, 5, 6, 32],
        eval_ctx,
    );
    check(
        "resnet 2D 64→64",
        ResnetBlock::new(2, 64, 64, 0.0, &mut init()).unwrap(),
        &[1, 4, 5, 64],
        eval_ctx,
    );
    check(
        "resnet 3D 32→64",
        ResnetBlock::new(3, 32, 64, 0.0, &mut init()).unwrap(),
        &[1, 3, 4, 5, 32],
        eval_ctx,
    );
}

#[test]
fn resnet_block_with_lora_dropout_and_recompute() {
    for recompute in [false, true] {
        let mut b = ResnetBlock::new(2, 32, 64, 0.25, &mut init()).unwrap();
        b.inject_lora(4, &mut Init::random(3)).unwrap();
        b.recompute = recompute;
        // Training mode: block dropout and LoRA dropout active, same masks on every pass.
        check(
            &format!("resnet LoRA train recompute={recompute}"),
            b,
            &[2, 4, 5, 32],
            train_ctx,
        );
    }
    let mut b = ResnetBlock::new(3, 32, 64, 0.25, &mut init()).unwrap();
    b.inject_lora(4, &mut Init::random(3)).unwrap();
    check("resnet 3D LoRA train", b, &[1, 3, 2, 4, 32], train_ctx);
    // Plain convolutions: the replay skips the second half's forward and must still redraw
    // the same dropout mask.
    let mut b = ResnetBlock::new(2, 32, 64, 0.25, &mut init()).unwrap();
    b.recompute = true;
    check("resnet plain train recompute", b, &[2, 4, 5, 32], train_ctx);
}

#[test]
fn attn_block_2d_3d_lora_recompute() {
    check(
        "attn 2D",
        AttnBlock::new(2, 32, &mut init()).unwrap(),
        &[2, 5, 6, 32],
        eval_ctx,
    );
    check(
        "attn 3D",
        AttnBlock::new(3, 32, &mut init()).unwrap(),
        &[1, 3, 4, 5, 32],
        eval_ctx,
    );
    let mut a = AttnBlock::new(2, 32, &mut init()).unwrap();
    a.inject_lora(4, &mut Init::random(4)).unwrap();
    a.recompute = true;
    check("attn 2D LoRA train recompute", a, &[1, 4, 3, 32], train_ctx);
}

#[test]
fn resampling_blocks() {
    check(
        "downsample 2D",
        Downsample::new(2, 8, &mut init()).unwrap(),
        &[2, 7, 6, 8],
        eval_ctx,
    );
    // A linear layer: the difference quotient is exact up to rounding, so a long step.
    check_with_step(
        "downsample 3D",
        Downsample::new(3, 4, &mut init()).unwrap(),
        &[1, 4, 5, 6, 4],
        eval_ctx,
        0.3,
    );
    check(
        "upsample 2D",
        Upsample::new(2, 8, &mut init()).unwrap(),
        &[1, 3, 4, 8],
        eval_ctx,
    );
    check(
        "upsample 3D",
        Upsample::new(3, 4, &mut init()).unwrap(),
        &[1, 2, 3, 2, 4],
        eval_ctx,
    );
}

#[test]
fn mid_block_and_latent_head() {
    check(
        "mid 2D",
        MidBlock::new(2, 32, 0.0, &mut init()).unwrap(),
        &[1, 3, 4, 32],
        eval_ctx,
    );
    // ReLU: pre-activations are kept far from the kink (biases ±2, small weights), half of
    // the channels active and half dead, so no finite-difference step crosses it.
    let mut head = LatentHead::new(3, 2, &mut init()).unwrap();
    randomise(&mut head, 8);
    set_param(&mut head, "channel_ds.0.weight", |_, v| 0.5 * v);
    set_param(&mut head, "channel_ds.2.weight", |_, v| 0.05 * v);
    for key in ["channel_ds.0.bias", "channel_ds.2.bias"] {
        set_param(&mut head, key, |i, _| if i % 2 == 0 { 2.0 } else { -2.0 });
    }
    let mut sys = system(head, randn(&[1, 3, 2, 4, 2], 6), eval_ctx);
    assert_checks("latent head 3D", &sys.check(STEP, 2000, None), TOL);
}

/// Overwrite a parameter elementwise: `f(index, current value)`.
fn set_param(model: &mut dyn Parameters, key: &str, f: impl Fn(usize, f32) -> f32) {
    let mut found = false;
    model.visit_params("", &mut |k, p| {
        if k == key {
            found = true;
            for (i, v) in p.value.f32s_mut("test").unwrap().iter_mut().enumerate() {
                *v = f(i, *v);
            }
        }
    });
    assert!(found, "no parameter {key}");
}

#[test]
fn patch_gan_discriminator_train_mode() {
    let mut d = NLayerDiscriminator::new(1, 8, 3, &mut init()).unwrap();
    randomise(&mut d, 9);
    // LeakyReLU inputs kept far from the kink (see the latent head): the first convolution's
    // weights small and its bias ±2, BatchNorm shifts ±2 per channel with scales ~0.5.
    set_param(&mut d, "main.0.weight", |_, v| 0.25 * v);
    for key in ["main.0.bias", "main.3.bias", "main.6.bias", "main.9.bias"] {
        set_param(&mut d, key, |i, _| if i % 2 == 0 { 2.0 } else { -2.0 });
    }
    // BatchNorm scales ~0.5: a 4σ margin to the kink, and no attenuation of early layers.
    for key in ["main.3.weight", "main.6.weight", "main.9.weight"] {
        set_param(&mut d, key, |_, v| 0.5 + 0.5 * v);
    }
    // BatchNorm in training mode: batch statistics (and a running-statistics update per pass,
    // which the training-mode output does not depend on).
    let mut sys = system(d, randn(&[2, 32, 32, 1], 12), train_ctx);
    assert_checks("PatchGAN", &sys.check(STEP, 3000, None), TOL);
}

/// The checker must be able to fail: a 1 % error in one parameter's gradient is caught.
#[test]
fn a_wrong_gradient_is_caught() {
    let mut b = ResnetBlock::new(2, 32, 32, 0.0, &mut init()).unwrap();
    randomise(&mut b, 7);
    let mut sys = system(b, randn(&[1, 4, 5, 32], 5), eval_ctx);
    for target in ["x", "conv1.weight", "norm2.bias"] {
        let checks = sys.check(STEP, 1000, Some(target));
        let bad: Vec<_> = checks
            .iter()
            .filter(|c| !c.passes(TOL))
            .map(|c| c.what.as_str())
            .collect();
        assert_eq!(bad, vec![target], "sabotaging {target}");
    }
}
