//! LoRA as the reference injects it: a fresh branch changes nothing, dropout acts on the
//! branch only (training mode), the base is frozen, bad ranks are refused.

mod common;

use medvae_model::autoencoder::{AeGrads, AutoencoderKL, Outputs, Sampling};
use medvae_model::layer::{Ctx, Parameters};
use medvae_model::layers::conv::{conv_spec, Conv, ConvOp};
use medvae_model::layers::Init;
use medvae_model::lora::{is_lora_key, LoraConv, LORA_DROPOUT};
use medvae_model::zoo::ModelConfig;

fn cfg(lora: Option<usize>) -> ModelConfig {
    ModelConfig {
        lora_rank: lora,
        ..common::tiny_config(2, 3, 3)
    }
}

#[test]
fn fresh_lora_leaves_the_model_unchanged() {
    // Same seed: the base weights are drawn before the LoRA branches.
    let mut base = AutoencoderKL::new(&cfg(None), &mut Init::random(1)).unwrap();
    let mut lora = AutoencoderKL::new(&cfg(Some(4)), &mut Init::random(1)).unwrap();
    let x = common::randn(&[1, 8, 8, 3], 2);
    let all = Outputs {
        decode: true,
        latent: true,
    };
    // Training mode: LoRA dropout is active, but on a zero branch.
    let a = base
        .forward(&x, Sampling::Mode, all, &mut Ctx::train(3))
        .unwrap();
    let b = lora
        .forward(&x, Sampling::Mode, all, &mut Ctx::train(3))
        .unwrap();
    assert_eq!(a.dec.unwrap().to_f32_vec(), b.dec.unwrap().to_f32_vec());
    assert_eq!(a.moments.to_f32_vec(), b.moments.to_f32_vec());
}

#[test]
fn base_is_frozen_and_only_trainable_params_get_gradients() {
    let mut m = AutoencoderKL::new(&cfg(Some(4)), &mut Init::random(1)).unwrap();
    let x = common::randn(&[1, 8, 8, 3], 2);
    let out = m
        .forward(
            &x,
            Sampling::Mode,
            Outputs {
                decode: true,
                latent: true,
            },
            &mut Ctx::train(5),
        )
        .unwrap();
    let g = common::randn(out.dec.as_ref().unwrap().shape(), 6);
    let gl = common::randn(out.latent.as_ref().unwrap().shape(), 7);
    let grads = AeGrads {
        dec: Some(&g),
        latent: Some(&gl),
        ..AeGrads::default()
    };
    m.backward(grads, false).unwrap();
    let (mut lora_keys, mut frozen, mut trained_other) = (0, 0, 0);
    m.visit_params("", &mut |key, p| {
        let in_base = key.starts_with("encoder.") || key.starts_with("decoder.");
        if is_lora_key(key) {
            lora_keys += 1;
            assert!(p.trainable && p.grad.is_some(), "{key}");
        } else if in_base {
            frozen += 1;
            assert!(!p.trainable && p.grad.is_none(), "{key} should be frozen");
        } else {
            trained_other += 1;
            assert!(p.trainable && p.grad.is_some(), "{key}");
        }
    });
    assert!(lora_keys > 0 && frozen > 0 && trained_other > 0);
}

#[test]
fn dropout_acts_on_the_branch_in_training_mode_only() {
    let spec = conv_spec(2, 8, 16, 3, 1, 1, 0).unwrap();
    let conv = Conv::new(spec, 2, true, &mut Init::random(1)).unwrap();
    let mut l = LoraConv::wrap(conv.clone(), 4, &mut Init::random(2)).unwrap();
    l.lora_up.weight.value = common::randn(l.lora_up.weight.value.shape(), 3);
    let x = common::randn(&[2, 9, 7, 8], 4);
    let base = conv.apply(&x).unwrap().to_f32_vec();
    let eval = l.conv_forward(&x, &mut Ctx::eval()).unwrap().to_f32_vec();
    let train = l.conv_forward(&x, &mut Ctx::train(5)).unwrap().to_f32_vec();
    let again = l.conv_forward(&x, &mut Ctx::train(5)).unwrap().to_f32_vec();
    let other = l.conv_forward(&x, &mut Ctx::train(6)).unwrap().to_f32_vec();
    assert_eq!(train, again, "same seed, same mask");
    assert_ne!(train, other);
    let keep = 1.0 / (1.0 - LORA_DROPOUT);
    let mut dropped = 0;
    for i in 0..base.len() {
        let branch_eval = eval[i] - base[i];
        let branch_train = train[i] - base[i];
        if branch_train.abs() <= 1e-5 * (1.0 + base[i].abs()) {
            dropped += 1;
        } else {
            let want = keep * branch_eval;
            assert!(
                (branch_train - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "element {i}: {branch_train} vs {want}"
            );
        }
    }
    let rate = dropped as f64 / base.len() as f64;
    assert!((rate - 0.1).abs() < 0.03, "drop rate {rate}");
}

#[test]
fn rank_above_the_channel_count_is_refused() {
    let spec = conv_spec(2, 3, 16, 3, 1, 1, 0).unwrap();
    let conv = Conv::new(spec, 2, true, &mut Init::Zeros).unwrap();
    let e = LoraConv::wrap(conv, 4, &mut Init::Zeros).unwrap_err();
    assert!(e.to_string().contains("LoRA rank 4"), "{e}");
}
