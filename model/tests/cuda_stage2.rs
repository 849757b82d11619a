//! Stage 2 on CUDA against the same computation on the CPU: the BiomedCLIP-style image tower
//! (patch rows, class and position tokens, head split and merge, class pooling — all strided
//! views now), the CLIP transform (resize, crop, grey expansion, normalisation), and a whole
//! stage-2 step into the latent head. FP32 precision, same weights, inputs and noise; BF16 for
//! the tower's features with a looser bound.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes.

mod common;

use common::gpu::{gpu_or_skip, worst, GPU};
use common::{randn, randn_scaled, tiny_head_ae};
use medvae_model::autoencoder::Sampling;
use medvae_model::layer::{move_params, zero_grads, Ctx, Layer, Parameters};
use medvae_model::layers::state::export_grads;
use medvae_model::layers::Init;
use medvae_model::losses::stage2::{stage2_step, BiomedClipLatentLoss};
use medvae_model::vit::{VisionTower, VitConfig};
use medvae_runtime::golden::rel_error;
use medvae_runtime::{set_cuda_precision, Tensor};

/// Head dimension 64 (ViT-B's), 17 tokens (not a multiple of 8), pixels past the last patch.
fn tower_config() -> VitConfig {
    VitConfig {
        image_size: 36,
        patch: 8,
        in_chans: 3,
        width: 128,
        depth: 2,
        heads: 2,
        mlp_hidden: 256,
        embed_dim: 32,
        proj_bias: false,
    }
}

/// A tower with non-trivial weights (norm scales around 1, the rest `N(0, 0.1²)`), frozen.
fn tower(seed: u64) -> VisionTower {
    let mut t = VisionTower::new(&tower_config(), &mut Init::Zeros).expect("tower");
    let mut s = seed;
    t.visit_params("", &mut |key, p| {
        s += 1;
        let base = f32::from(u8::from(key.contains("norm") && key.ends_with(".weight")));
        let noise = randn_scaled(p.value.shape(), s, 0.1).to_f32_vec();
        for (v, n) in p
            .value
            .f32s_mut("test")
            .expect("host")
            .iter_mut()
            .zip(noise)
        {
            *v = base + n;
        }
    });
    t.freeze();
    t
}

fn on_gpu(t: &Tensor) -> Tensor {
    t.to_device(GPU).expect("upload")
}

fn rel(got: &Tensor, want: &Tensor) -> f64 {
    rel_error(&got.to_f32_vec(), &want.to_f32_vec())
}

#[test]
fn tower_forward_and_input_gradient_match_the_cpu() {
    if !gpu_or_skip() {
        return;
    }
    let mut cpu = tower(3);
    let mut gpu = cpu.clone();
    move_params(&mut gpu, GPU).expect("move tower");
    let x = randn(&[3, 36, 36, 3], 5);
    let g = randn(&[3, 32], 6);
    for (precision, tol) in [("fp32", 1e-4), ("bf16", 3e-2)] {
        set_cuda_precision(precision).expect("precision");
        let y = cpu.forward(&x, &mut Ctx::eval_with_grad()).expect("cpu");
        let dx = cpu.backward(&g).expect("cpu backward");
        let gy = gpu
            .forward(&on_gpu(&x), &mut Ctx::eval_with_grad())
            .expect("gpu");
        assert_eq!(gy.device(), GPU);
        let gdx = gpu.backward(&on_gpu(&g)).expect("gpu backward");
        let (ey, edx) = (rel(&gy, &y), rel(&gdx, &dx));
        println!("tower {precision}: features {ey:.2e}, input gradient {edx:.2e}");
        assert!(
            ey <= tol && edx <= tol,
            "{precision}: {ey:.2e} / {edx:.2e} > {tol:.0e}"
        );
    }
    set_cuda_precision("fp32").expect("precision");
}

#[test]
fn stage2_step_matches_the_cpu() {
    if !gpu_or_skip() {
        return;
    }
    set_cuda_precision("fp32").expect("precision");
    // 40×28 images → 20×14 latents: the transform resizes both (up and down) and crops.
    let x = randn(&[2, 40, 28, 1], 31);
    let eps = randn(&[2, 20, 14, 3], 41);
    let (mut ae, mut loss) = (tiny_head_ae(3), BiomedClipLatentLoss::new(tower(21)));
    let (mut gae, mut gloss) = (tiny_head_ae(3), loss.clone());
    move_params(&mut gae, GPU).expect("move ae");
    move_params(&mut gloss.tower, GPU).expect("move tower");
    zero_grads(&mut ae);
    zero_grads(&mut gae);
    let cpu = stage2_step(
        &mut ae,
        &mut loss,
        &x,
        Sampling::Eps(eps.clone()),
        &mut Ctx::train(7),
    )
    .expect("cpu step");
    let gpu = stage2_step(
        &mut gae,
        &mut gloss,
        &on_gpu(&x),
        Sampling::Eps(on_gpu(&eps)),
        &mut Ctx::train(7),
    )
    .expect("gpu step");
    assert_eq!(gpu.latent.device(), GPU);
    let e_loss = (gpu.value.loss as f64 - cpu.value.loss as f64).abs() / cpu.value.loss as f64;
    let e_samples = rel_error(&gpu.value.per_sample, &cpu.value.per_sample);
    let e_latent = rel(&gpu.latent, &cpu.latent);
    println!(
        "stage 2: loss {} vs {} (rel {e_loss:.2e}), per sample {e_samples:.2e}, latent {e_latent:.2e}",
        gpu.value.loss, cpu.value.loss
    );
    assert!(e_loss <= 1e-4 && e_samples <= 1e-4 && e_latent <= 1e-4);
    let grads = worst(
        "stage-2 head gradients",
        &export_grads(&mut gae),
        &export_grads(&mut ae),
    );
    assert!(grads <= 1e-3, "head gradients {grads:.2e}");
}
