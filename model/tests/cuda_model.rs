//! Whole-model parity: the autoencoder's forward and backward with every tensor on CUDA
//! against the same workload on the CPU (same weights, same input, same sampling noise).
//! FP32 convolutions must agree to 1e-3 (relative L2, every parameter gradient); TF32 and BF16
//! tensor-core runs must stay finite and close in loss.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes.

mod common;

use common::gpu::{gpu_or_skip, worst, GPU};
use medvae_model::layers::state::export_grads;
use medvae_model::workloads::AeWorkload;
use medvae_model::zoo::zoo_config;
use medvae_runtime::golden::rel_error as rel_err;
use medvae_runtime::set_cuda_precision;

fn compare(model: &str, batch: usize, size: usize) {
    let cfg = zoo_config(model).expect("zoo model");
    let mut cpu = AeWorkload::new(&cfg, batch, size, 7).expect("cpu workload");
    let mut gpu = AeWorkload::new(&cfg, batch, size, 7).expect("gpu workload");
    gpu.to_device(GPU).expect("model to GPU");
    set_cuda_precision("fp32").expect("precision");

    let z_cpu = cpu.encode().expect("cpu encode").to_f32_vec();
    let z_gpu = gpu.encode().expect("gpu encode").to_f32_vec();
    let e = rel_err(&z_gpu, &z_cpu);
    println!("{model} {batch}x{size} encode                 rel err {e:.2e}");
    assert!(e < 1e-3, "{model}: encode differs by {e:.3e}");

    let l_cpu = cpu.fwd_bwd().expect("cpu step");
    let l_gpu = gpu.fwd_bwd().expect("gpu step");
    let e = ((l_gpu - l_cpu) / l_cpu).abs() as f64;
    println!("{model} {batch}x{size} L1 loss {l_gpu:.6} vs {l_cpu:.6} rel err {e:.2e}");
    assert!(e < 1e-4, "{model}: loss differs by {e:.3e}");
    let g_cpu = export_grads(&mut cpu.model);
    let g_gpu = export_grads(&mut gpu.model);
    let e = worst(
        &format!("{model} {batch}x{size} parameter gradients"),
        &g_gpu,
        &g_cpu,
    );
    assert!(e < 1e-3, "{model}: gradients differ by {e:.3e}");

    for prec in ["tf32", "bf16"] {
        set_cuda_precision(prec).expect("precision");
        let l = gpu.fwd_bwd().expect("tensor-core step");
        let l_ref = cpu.fwd_bwd().expect("cpu step");
        let e = ((l - l_ref) / l_ref).abs() as f64;
        println!("{model} {batch}x{size} {prec} L1 loss {l:.6} vs {l_ref:.6} rel err {e:.2e}");
        assert!(
            l.is_finite() && e < 5e-2,
            "{model} {prec}: loss {l} vs {l_ref}"
        );
    }
    set_cuda_precision("fp32").expect("precision");
}

// One test: the CUDA precision is process-wide, so the cases must not run concurrently.
#[test]
fn autoencoders_match_cpu() {
    if gpu_or_skip() {
        compare("medvae_4_1_2d", 2, 32);
        compare("medvae_4_1_3d", 1, 16);
    }
}
