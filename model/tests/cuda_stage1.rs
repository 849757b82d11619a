//! The stage-1 training step on CUDA against the same step on the CPU: generator loss (L1 +
//! LPIPS + KL + the PatchGAN term with its adaptive weight), every autoencoder gradient, the
//! Adam update, and a discriminator step — FP32 convolutions, same weights, input and noise.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes.

mod common;

use common::gpu::{gpu_or_skip, nudge_one_ulp, worst, worst_beyond_noise, GPU};
use medvae_model::blocks::NLayerDiscriminator;
use medvae_model::layer::{zero_grads, Ctx, Parameters};
use medvae_model::layers::state::{export_grads, export_params, ExportedTensor};
use medvae_model::layers::Init;
use medvae_model::workloads::Stage1Workload;
use medvae_model::zoo::zoo_config;
use medvae_runtime::golden::rel_error;
use medvae_runtime::ops::elementwise::standard_normal;
use medvae_runtime::{set_cuda_precision, Tensor};

/// `‖Δgpu − Δcpu‖ / ‖Δcpu‖` over every parameter at once, Δ = after − before.
fn update_error(
    before: &(Vec<ExportedTensor>, Vec<ExportedTensor>),
    after: &(Vec<ExportedTensor>, Vec<ExportedTensor>),
) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (((bg, bc), ag), ac) in before.0.iter().zip(&before.1).zip(&after.0).zip(&after.1) {
        for (((&bg, &bc), &ag), &ac) in bg.data.iter().zip(&bc.data).zip(&ag.data).zip(&ac.data) {
            let (dg, dc) = (ag as f64 - bg as f64, ac as f64 - bc as f64);
            num += (dg - dc) * (dg - dc);
            den += dc * dc;
        }
    }
    (num / den.max(1e-300)).sqrt()
}

/// One discriminator step on both workloads (real = the input, fake = noise drawn from
/// `fake_seed`, training context `ctx_seed`): hinge loss within 1e-4, gradients within 1e-3.
/// The nudged CPU workload takes the same step, so that its discriminator state stays the
/// noise floor of the CPU's.
fn discriminator_steps_agree(
    what: &str,
    cpu: &mut Stage1Workload,
    gpu: &mut Stage1Workload,
    nudged: &mut Stage1Workload,
    fake_seed: u64,
    ctx_seed: u64,
) {
    let fake_cpu = standard_normal(cpu.ae.x.shape(), fake_seed).expect("fake");
    zero_grads(&mut nudged.loss.disc);
    nudged
        .loss
        .discriminator_step(&nudged.ae.x, &fake_cpu, 0, &mut Ctx::train(ctx_seed))
        .expect("nudged disc step");
    let fake_gpu = fake_cpu.to_device(GPU).expect("fake to GPU");
    zero_grads(&mut cpu.loss.disc);
    zero_grads(&mut gpu.loss.disc);
    let (mut c_ctx, mut g_ctx) = (Ctx::train(ctx_seed), Ctx::train(ctx_seed));
    let d_cpu = cpu
        .loss
        .discriminator_step(&cpu.ae.x, &fake_cpu, 0, &mut c_ctx)
        .expect("cpu disc step")
        .expect("adversarial term on");
    let d_gpu = gpu
        .loss
        .discriminator_step(&gpu.ae.x, &fake_gpu, 0, &mut g_ctx)
        .expect("gpu disc step")
        .expect("adversarial term on");
    let e = rel(d_gpu.loss, d_cpu.loss);
    println!(
        "{what} hinge {:.6} (cuda) vs {:.6} (cpu), rel err {e:.2e}",
        d_gpu.loss, d_cpu.loss
    );
    assert!(e < 1e-4, "{what} loss differs by {e:.3e}");
    let ed = worst(
        &format!("{what} gradients"),
        &export_grads(&mut gpu.loss.disc),
        &export_grads(&mut cpu.loss.disc),
    );
    assert!(ed < 1e-3, "{what} gradients differ by {ed:.3e}");
}

fn rel(a: f32, b: f32) -> f64 {
    ((a - b) as f64).abs() / (b as f64).abs().max(1e-12)
}

#[test]
fn stage1_step_on_cuda_matches_cpu() {
    if !gpu_or_skip() {
        return;
    }
    set_cuda_precision("fp32").expect("precision");
    let cfg = zoo_config("medvae_4_1_2d").expect("zoo model");
    let mut cpu = Stage1Workload::new(&cfg, 2, 32, 11).expect("cpu workload");
    let mut gpu = Stage1Workload::new(&cfg, 2, 32, 11).expect("gpu workload");
    gpu.to_device(GPU).expect("workload to GPU");
    // The CPU reference with its weights nudged by one ulp: its distance from `cpu` is each
    // tensor's rounding noise floor (see `worst_beyond_noise`).
    let mut nudged = Stage1Workload::new(&cfg, 2, 32, 11).expect("nudged workload");
    nudge_one_ulp(&mut nudged.ae.model, 5);

    // Two full generator steps (forward, loss, backward, Adam): the second runs on updated
    // weights and Adam moments.
    let mut before = (
        export_params(&mut gpu.ae.model),
        export_params(&mut cpu.ae.model),
    );
    for step in 1..=2 {
        let l_cpu = cpu.step().expect("cpu step");
        let l_gpu = gpu.step().expect("gpu step");
        nudged.step().expect("nudged cpu step");
        let e = rel(l_gpu, l_cpu);
        println!("step {step}: loss {l_gpu:.6} (cuda) vs {l_cpu:.6} (cpu), rel err {e:.2e}");
        assert!(e < 1e-3, "step {step}: loss differs by {e:.3e}");
        let (g_gpu, g_cpu) = (
            export_grads(&mut gpu.ae.model),
            export_grads(&mut cpu.ae.model),
        );
        let eg = worst_beyond_noise(
            &format!("step {step} gradients"),
            &g_gpu,
            &g_cpu,
            &export_grads(&mut nudged.ae.model),
            2e-3,
        );
        assert!(eg <= 1.0, "step {step}: gradients differ past the noise");
        let after = (
            export_params(&mut gpu.ae.model),
            export_params(&mut cpu.ae.model),
        );
        let after_nudged = export_params(&mut nudged.ae.model);
        // Adam divides by √v, so an element whose gradient is rounding noise (the attention
        // key bias, 0 in exact arithmetic: softmax ignores a per-row constant; elements near 0
        // after a step) moves by ±lr in either engine. The update as a whole must agree, and
        // on the first step (moments from zero) every tensor with a real gradient exactly.
        let eu = update_error(&before, &after);
        println!("step {step}: Adam update (all parameters) rel err {eu:.2e}");
        assert!(
            eu < 2e-2,
            "step {step}: the Adam updates differ by {eu:.3e}"
        );
        if step == 1 {
            let noise: Vec<&str> = g_gpu
                .iter()
                .zip(&g_cpu)
                .filter(|(g, c)| rel_error(&g.data, &c.data) > 1e-2)
                .map(|(_, c)| c.key.as_str())
                .collect();
            println!("step 1: noise-only gradients: {noise:?}");
            assert!(noise.len() <= 4, "too many mismatched gradients: {noise:?}");
            let keep = |t: &[ExportedTensor]| -> Vec<ExportedTensor> {
                t.iter()
                    .filter(|t| !noise.contains(&t.key.as_str()))
                    .cloned()
                    .collect()
            };
            let ep = worst_beyond_noise(
                "step 1 parameters after Adam",
                &keep(&after.0),
                &keep(&after.1),
                &keep(&after_nudged),
                1e-5,
            );
            assert!(ep <= 1.0, "step 1: parameters differ past the noise");
        }
        before = after;
    }

    // A discriminator step on real = the input, fake = fixed noise.
    discriminator_steps_agree("discriminator", &mut cpu, &mut gpu, &mut nudged, 99, 5);
    // BatchNorm running statistics moved the same way. They follow every discriminator forward
    // in training mode, the generator steps' too, on reconstructions that carry the generators'
    // differences (the attention key biases' ±lr moves among them): held to the nudged CPU run's
    // distance, like the gradients (on an H200: 1.6e-5 of the largest tensor's norm, the last
    // BatchNorm's running mean).
    let eb = worst_beyond_noise(
        "discriminator parameters and running statistics",
        &export_params(&mut gpu.loss.disc),
        &export_params(&mut cpu.loss.disc),
        &export_params(&mut nudged.loss.disc),
        1e-5,
    );
    assert!(eb <= 1.0, "discriminator state differs past the noise");
}

/// The 3D stage-1 step: LPIPS over the slices of the three axes and the PatchGAN over a
/// cube's slice batch, gathered and scattered on the device (`ops::slices`). One generator
/// step (forward, loss, backward, Adam) and a discriminator step on volumes, GPU against CPU.
#[test]
fn stage1_3d_step_on_cuda_matches_cpu() {
    if !gpu_or_skip() {
        return;
    }
    set_cuda_precision("fp32").expect("precision");
    let cfg = zoo_config("medvae_4_1_3d").expect("zoo model");
    let mut cpu = Stage1Workload::new(&cfg, 1, 16, 21).expect("cpu workload");
    let mut gpu = Stage1Workload::new(&cfg, 1, 16, 21).expect("gpu workload");
    // The CPU reference nudged by one ulp: the noise floor (see `worst_beyond_noise`).
    let mut nudged = Stage1Workload::new(&cfg, 1, 16, 21).expect("nudged workload");
    // The workload's 3-layer PatchGAN needs slices of at least 32 pixels (16 → 8 → 4 → 2 → 1
    // → nothing); 2 layers fit the 16² slices (16 → 8 → 4 → 3 → 2), as quickstart_3d uses.
    for w in [&mut cpu, &mut gpu, &mut nudged] {
        w.loss.disc = NLayerDiscriminator::new(cfg.out_ch, 64, 2, &mut Init::random(22))
            .expect("discriminator");
    }
    nudge_one_ulp(&mut nudged.ae.model, 6);
    gpu.to_device(GPU).expect("workload to GPU");
    assert_eq!(gpu.ae.x.shape(), &[1, 16, 16, 16, 1]);

    let l_cpu = cpu.step().expect("cpu step");
    let l_gpu = gpu.step().expect("gpu step");
    nudged.step().expect("nudged cpu step");
    let e = rel(l_gpu, l_cpu);
    println!("3D step: loss {l_gpu:.6} (cuda) vs {l_cpu:.6} (cpu), rel err {e:.2e}");
    assert!(e < 1e-3, "3D step: loss differs by {e:.3e}");
    let eg = worst_beyond_noise(
        "3D step gradients",
        &export_grads(&mut gpu.ae.model),
        &export_grads(&mut cpu.ae.model),
        &export_grads(&mut nudged.ae.model),
        2e-3,
    );
    assert!(eg <= 1.0, "3D step: gradients differ past the noise");

    // A discriminator step on volumes (real = the input, fake = fixed noise): both run as
    // the slice batches of the cube.
    discriminator_steps_agree("3D discriminator", &mut cpu, &mut gpu, &mut nudged, 98, 6);
}

/// A non-finite gradient on the GPU is caught before any parameter moves.
#[test]
fn adam_on_cuda_refuses_non_finite_gradients() {
    if !gpu_or_skip() {
        return;
    }
    let cfg = zoo_config("medvae_4_1_2d").expect("zoo model");
    let mut gpu = Stage1Workload::new(&cfg, 1, 32, 3).expect("workload");
    gpu.to_device(GPU).expect("to GPU");
    gpu.step().expect("first step");
    let before = export_params(&mut gpu.ae.model);
    let mut poisoned = false;
    gpu.ae.model.visit_params("", &mut |_, p| {
        let Some(g) = p.grad.as_mut().filter(|_| !poisoned) else {
            return;
        };
        let mut v = g.to_f32_vec();
        v[0] = f32::NAN;
        *g = Tensor::from_vec(g.shape(), v)
            .and_then(|t| t.to_device(GPU))
            .expect("poisoned gradient");
        poisoned = true;
    });
    assert!(poisoned);
    let err = gpu
        .opt
        .step(&mut gpu.ae.model, 1.0)
        .expect_err("a NaN gradient must be refused");
    assert!(err.to_string().contains("non-finite gradient"), "{err}");
    let after = export_params(&mut gpu.ae.model);
    assert_eq!(
        worst("parameters after the refused step", &after, &before),
        0.0
    );
}

/// The noise-floor check has teeth (no GPU needed): a 1 % error in one tensor fails it, where the
/// nudged reference moves by rounding only; errors within the floor pass.
#[test]
fn the_noise_floor_check_catches_a_wrong_gradient() {
    let tensor = |key: &str, data: Vec<f32>| ExportedTensor {
        key: key.into(),
        shape: vec![data.len()],
        data,
        kind: medvae_model::layer::ParamKind::Weight,
    };
    let cpu: Vec<ExportedTensor> = (0..4)
        .map(|i| {
            let v = standard_normal(&[64], 70 + i).expect("randn").to_f32_vec();
            tensor(&format!("t{i}"), v)
        })
        .collect();
    let scaled = |ts: &[ExportedTensor], which: usize, by: f32| -> Vec<ExportedTensor> {
        ts.iter()
            .enumerate()
            .map(|(i, t)| {
                let f = if i == which { by } else { 1.0 };
                tensor(&t.key, t.data.iter().map(|v| v * f).collect())
            })
            .collect()
    };
    let nudged = scaled(&cpu, 0, 1.0 + f32::EPSILON);
    let wrong = scaled(&cpu, 2, 1.01);
    assert!(worst_beyond_noise("wrong", &wrong, &cpu, &nudged, 2e-3) > 1.0);
    let rounded = scaled(&cpu, 1, 1.0 + 100.0 * f32::EPSILON);
    assert!(worst_beyond_noise("rounded", &rounded, &cpu, &nudged, 2e-3) <= 1.0);
    // A tensor whose reference moves a lot under the nudge is allowed that much more.
    let noisy_nudge = scaled(&cpu, 3, 1.0 + 1e-3);
    let off_by_1e2 = scaled(&cpu, 3, 1.01);
    assert!(worst_beyond_noise("noisy", &off_by_1e2, &cpu, &noisy_nudge, 2e-3) <= 1.0);
    assert!(worst_beyond_noise("noisy", &wrong, &cpu, &noisy_nudge, 2e-3) > 1.0);
}
