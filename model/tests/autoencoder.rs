//! `AutoencoderKL` as a whole: finite differences through every output (moments, z, dec,
//! latent, KL) to the image, the noise and every parameter, in 2D and 3D; activation
//! checkpointing changes nothing; gradient subsets; sampling modes.

mod common;

use common::{assert_checks_with, randn, randn_scaled, System};
use medvae_model::autoencoder::{AeGrads, AutoencoderKL, Outputs, Sampling};
use medvae_model::layer::{zero_grads, Ctx, Parameters};
use medvae_model::layers::state::export_grads;
use medvae_model::layers::Init;
use medvae_model::zoo::ModelConfig;
use medvae_runtime::Tensor;
use std::collections::BTreeMap;

/// Whole-model checks: the posterior's exp curves (long steps truncate) and many directions
/// are small next to the f32 noise of a dozen blocks (short steps are noisy), so each direction
/// takes the best of three steps (`check_steps`).
const TOL_AE: f64 = 1e-3;
/// Rounding-error growth through a dozen blocks (Winograd convolutions, attention), against
/// one block's `common::NOISE_DEPTH_BLOCK`.
const NOISE_DEPTH_AE: f64 = 32.0;
const STEPS_AE: [f32; 3] = [1e-1, 3e-2, 1e-2];
/// Deep in the network many single-parameter directions are small next to that noise (their
/// blocks are checked sharply in fd_blocks.rs); the model's own glue must resolve 1 % sharply.
const MIN_SHARP_AE: f64 = 0.65;
const GLUE: [&str; 5] = [
    "x",
    "eps",
    "quant_conv.weight",
    "post_quant_conv.weight",
    "channel_proj.weight",
];
const ALL: Outputs = Outputs {
    decode: true,
    latent: true,
};

fn tiny(dims: usize, lora: Option<usize>) -> ModelConfig {
    ModelConfig {
        attn_levels: vec![1],
        lora_rank: lora,
        ..common::tiny_config(dims, 2, 2)
    }
}

/// The model with fixed upstream gradients for its five outputs.
struct Probe {
    ae: AutoencoderKL,
    g: BTreeMap<&'static str, Tensor>,
}

impl Parameters for Probe {
    fn visit_params(&mut self, prefix: &str, f: &mut medvae_model::layer::ParamVisitor) {
        self.ae.visit_params(prefix, f);
    }
}

fn run(
    p: &mut Probe,
    inputs: &BTreeMap<String, Tensor>,
    ctx: &mut Ctx,
) -> BTreeMap<&'static str, Tensor> {
    let out =
        p.ae.forward(&inputs["x"], Sampling::Eps(inputs["eps"].clone()), ALL, ctx)
            .unwrap();
    BTreeMap::from([
        ("moments", out.moments),
        ("z", out.z),
        ("dec", out.dec.unwrap()),
        ("latent", out.latent.unwrap()),
        ("kl", out.kl),
    ])
}

fn objective(p: &mut Probe, inputs: &BTreeMap<String, Tensor>, ctx: &mut Ctx) -> (f64, f64) {
    let outs = run(p, inputs, ctx);
    let (mut f, mut m2) = (0.0, 0.0);
    for (k, y) in &outs {
        let (s, m) = common::dot(y, &p.g[k]);
        f += s;
        m2 += m * m;
    }
    (f, m2.sqrt())
}

fn gradients(
    p: &mut Probe,
    inputs: &BTreeMap<String, Tensor>,
    ctx: &mut Ctx,
) -> BTreeMap<String, Tensor> {
    run(p, inputs, ctx);
    let grads = AeGrads {
        moments: Some(&p.g["moments"]),
        z: Some(&p.g["z"]),
        dec: Some(&p.g["dec"]),
        latent: Some(&p.g["latent"]),
        kl: Some(&p.g["kl"]),
    };
    let d = p.ae.backward(grads, true).unwrap();
    BTreeMap::from([
        ("x".to_string(), d.x.unwrap()),
        ("eps".to_string(), d.eps.unwrap()),
    ])
}

/// Random parameters (norm scales around 1), with the latent head's ReLU inputs kept far from
/// the kink (biases ±2 by channel, small weights) so that no finite-difference step crosses it.
fn randomise(model: &mut dyn Parameters) {
    let mut s = 100;
    model.visit_params("", &mut |key, p| {
        s += 1;
        let norm_scale = key.contains("norm") && key.ends_with(".weight");
        let relu_in = key.starts_with("channel_ds.0.") || key.starts_with("channel_ds.2.");
        let scale = if relu_in { 0.02 } else { 0.15 };
        let noise = randn_scaled(p.value.shape(), s, scale).to_f32_vec();
        for (i, (v, n)) in p
            .value
            .f32s_mut("test")
            .unwrap()
            .iter_mut()
            .zip(noise)
            .enumerate()
        {
            *v = match () {
                _ if norm_scale => 1.0 + n,
                _ if relu_in && key.ends_with(".bias") => {
                    if i % 2 == 0 {
                        2.0
                    } else {
                        -2.0
                    }
                }
                _ => n,
            };
        }
    });
}

fn system(cfg: &ModelConfig, spatial: &[usize]) -> System<Probe> {
    let mut ae = AutoencoderKL::new(cfg, &mut Init::Zeros).unwrap();
    randomise(&mut ae);
    let mut x_shape = vec![1];
    x_shape.extend_from_slice(spatial);
    x_shape.push(cfg.in_channels);
    let x = randn(&x_shape, 1);
    let mut lat_shape = vec![1];
    lat_shape.extend(spatial.iter().map(|s| s / cfg.downsample_factor()));
    lat_shape.push(cfg.embed_dim);
    let eps = randn(&lat_shape, 2);
    let out = ae
        .forward(&x, Sampling::Eps(eps.clone()), ALL, &mut Ctx::eval())
        .unwrap();
    let mut g = BTreeMap::new();
    for (i, (k, t)) in [
        ("moments", &out.moments),
        ("z", &out.z),
        ("latent", out.latent.as_ref().unwrap()),
    ]
    .into_iter()
    .enumerate()
    {
        g.insert(k, randn(t.shape(), 10 + i as u64));
    }
    g.insert("dec", randn(out.dec.as_ref().unwrap().shape(), 20));
    g.insert("kl", randn(out.kl.shape(), 21));
    System {
        model: Probe { ae, g },
        inputs: BTreeMap::from([("x".to_string(), x), ("eps".to_string(), eps)]),
        objective,
        gradients,
        ctx: Ctx::eval_with_grad,
        noise_depth: NOISE_DEPTH_AE,
    }
}

#[test]
fn finite_differences_2d_every_output_input_and_parameter() {
    let mut sys = system(&tiny(2, None), &[8, 6]);
    let checks = sys.check_steps(&STEPS_AE, 500, TOL_AE);
    let mut glue = GLUE.to_vec();
    glue.extend(["encoder.conv_in.weight", "decoder.conv_out.weight"]);
    assert_checks_with("AutoencoderKL 2D", &checks, TOL_AE, MIN_SHARP_AE, &glue);
}

#[test]
fn finite_differences_3d_with_lora() {
    let cfg = tiny(3, Some(2));
    let mut sys = system(&cfg, &[4, 2, 6]);
    let checks = sys.check_steps(&STEPS_AE, 600, TOL_AE);
    // Frozen base: only LoRA weights, quant convs and the latent head get gradients.
    for c in &checks {
        let k = &c.what;
        let trained = k == "x"
            || k == "eps"
            || k.contains("lora_")
            || !(k.starts_with("encoder.") || k.starts_with("decoder."));
        assert!(trained, "{k} should be frozen");
    }
    assert!(checks.iter().any(|c| c.what.contains("lora_up")));
    assert_checks_with(
        "AutoencoderKL 3D LoRA",
        &checks,
        TOL_AE,
        MIN_SHARP_AE,
        &GLUE,
    );
    // The reference's 3D KL keeps the W axis: [N, W].
    assert_eq!(sys.model.g["kl"].shape(), &[1, 3]);
}

fn all_grads(
    ae: &mut AutoencoderKL,
    x: &Tensor,
    eps: &Tensor,
    g: &BTreeMap<&str, Tensor>,
    seed: u64,
) -> Vec<(String, Vec<f32>)> {
    zero_grads(ae);
    let mut ctx = Ctx::train(seed);
    ae.forward(x, Sampling::Eps(eps.clone()), ALL, &mut ctx)
        .unwrap();
    let grads = AeGrads {
        dec: Some(&g["dec"]),
        kl: Some(&g["kl"]),
        latent: Some(&g["latent"]),
        ..AeGrads::default()
    };
    let d = ae.backward(grads, true).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = export_grads(ae)
        .into_iter()
        .map(|t| (t.key, t.data))
        .collect();
    v.push(("x".into(), d.x.unwrap().to_f32_vec()));
    v
}

#[test]
fn activation_checkpointing_gives_the_same_gradients() {
    // Dropout in the blocks and LoRA dropout active: the replay must redraw the same masks.
    let cfg = ModelConfig {
        dropout: 0.2,
        ..tiny(2, Some(2))
    };
    let sys = system(&cfg, &[8, 8]);
    let (mut ae, g) = (sys.model.ae, sys.model.g);
    let (x, eps) = (&sys.inputs["x"], &sys.inputs["eps"]);
    let plain = all_grads(&mut ae, x, eps, &g, 9);
    ae.set_recompute(true);
    let checkpointed = all_grads(&mut ae, x, eps, &g, 9);
    assert_eq!(plain.len(), checkpointed.len());
    // The replay computes the same thing, and every CPU reduction sums in a fixed order, so
    // the gradients agree bit for bit.
    for ((k, a), (_, b)) in plain.iter().zip(&checkpointed) {
        assert_eq!(a, b, "{k}");
    }
    // Another seed draws other masks.
    let other = all_grads(&mut ae, x, eps, &g, 10);
    assert_ne!(plain.last().unwrap().1, other.last().unwrap().1);
}

#[test]
fn gradient_subsets_and_missing_forward_state() {
    let sys = system(&tiny(2, None), &[8, 8]);
    let (mut ae, g) = (sys.model.ae, sys.model.g);
    let x = &sys.inputs["x"];
    // Latent only, posterior mode (stage-2 shape): no eps gradient, an image gradient.
    let mut ctx = Ctx::eval_with_grad();
    let out = ae
        .forward(
            x,
            Sampling::Mode,
            Outputs {
                decode: false,
                latent: true,
            },
            &mut ctx,
        )
        .unwrap();
    assert!(out.eps.is_none() && out.dec.is_none());
    let d = ae
        .backward(
            AeGrads {
                latent: Some(&g["latent"]),
                ..AeGrads::default()
            },
            true,
        )
        .unwrap();
    assert!(d.eps.is_none() && d.x.is_some());
    // Nothing saved any more: a second backward is an error, not a panic.
    assert!(ae
        .backward(
            AeGrads {
                latent: Some(&g["latent"]),
                ..AeGrads::default()
            },
            true
        )
        .is_err());
    // A decoder gradient without a decoded forward is an error.
    ae.forward(
        x,
        Sampling::Mode,
        Outputs {
            decode: false,
            latent: false,
        },
        &mut ctx,
    )
    .unwrap();
    assert!(ae
        .backward(
            AeGrads {
                dec: Some(&g["dec"]),
                ..AeGrads::default()
            },
            true
        )
        .is_err());
    // Eval without gradients keeps nothing.
    ae.forward(x, Sampling::Mode, ALL, &mut Ctx::eval())
        .unwrap();
    assert!(ae
        .backward(
            AeGrads {
                kl: Some(&g["kl"]),
                ..AeGrads::default()
            },
            true
        )
        .is_err());
}

#[test]
fn random_sampling_is_seeded() {
    let sys = system(&tiny(2, None), &[8, 8]);
    let mut ae = sys.model.ae;
    let x = &sys.inputs["x"];
    let z = |ae: &mut AutoencoderKL, seed| {
        let out = ae
            .forward(
                x,
                Sampling::Random,
                Outputs {
                    decode: false,
                    latent: false,
                },
                &mut Ctx::train(seed),
            )
            .unwrap();
        (out.z.to_f32_vec(), out.eps.unwrap().to_f32_vec())
    };
    let (a, ea) = z(&mut ae, 1);
    assert_eq!((a.clone(), ea.clone()), z(&mut ae, 1));
    assert_ne!(a, z(&mut ae, 2).0);
    // z = mean + std·eps with the returned eps.
    let out = ae
        .forward(
            x,
            Sampling::Eps(Tensor::from_vec(&[1, 4, 4, 2], ea).unwrap()),
            ALL,
            &mut Ctx::eval(),
        )
        .unwrap();
    assert_eq!(out.z.to_f32_vec(), a);
}
