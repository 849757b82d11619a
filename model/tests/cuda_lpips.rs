//! LPIPS with every tensor on CUDA against the same network on the CPU: a narrow random VGG,
//! 1- and 3-channel images, each gradient request (joint batch, input only, target only, none).
//! Distances and input gradients must agree to 1e-4 / 1e-3 (relative L2; FP32 convolutions).
//!
//! Without a usable GPU the test prints "skipped: <reason>" and passes.

mod common;

use common::gpu::{gpu_or_skip, GPU};
use medvae_model::layer::move_params;
use medvae_model::layers::init::Init;
use medvae_model::losses::{Lpips, Need};
use medvae_runtime::golden::rel_error as rel_err;
use medvae_runtime::{set_cuda_precision, Device, Tensor};

const NARROW: [usize; 5] = [8, 16, 16, 32, 32];

/// Deterministic values in [-1, 1] (images in the reference's range).
fn image(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    Tensor::from_vec(shape, v).expect("image")
}

fn compare(cpu: &Lpips, gpu: &Lpips, c: usize, need: Need) {
    let shape = [2, 32, 32, c];
    let (x, t) = (image(&shape, 3 + c as u64), image(&shape, 4 + c as u64));
    let (gx, gt) = (x.to_device(GPU).unwrap(), t.to_device(GPU).unwrap());
    let (p, state) = cpu.distance(&x, &t, need).expect("cpu distance");
    let (gp, gstate) = gpu.distance(&gx, &gt, need).expect("gpu distance");
    assert_eq!(gp.device(), Device::Cpu, "distances come back to the host");
    let e = rel_err(&gp.to_f32_vec(), &p.to_f32_vec());
    println!(
        "LPIPS {c}ch {need:?} distance {:?} rel err {e:.2e}",
        gp.to_f32_vec()
    );
    assert!(e < 1e-4, "{c}ch {need:?}: distance differs by {e:.3e}");
    let (Some(state), Some(gstate)) = (state, gstate) else {
        assert_eq!(need, Need::NONE, "a gradient pass keeps its state");
        return;
    };
    let dp = [0.7f32, -1.3];
    let g = cpu.distance_backward(state, &dp).expect("cpu backward");
    let gg = gpu.distance_backward(gstate, &dp).expect("gpu backward");
    for (what, want, got, asked) in [
        ("input", g.input, gg.input, need.input),
        ("target", g.target, gg.target, need.target),
    ] {
        assert_eq!(want.is_some(), asked, "{what}: cpu gradient presence");
        assert_eq!(got.is_some(), asked, "{what}: gpu gradient presence");
        if let (Some(want), Some(got)) = (want, got) {
            assert_eq!(got.device(), GPU, "{what}: the gradient stays on the GPU");
            assert_eq!(got.shape(), &shape);
            let e = rel_err(&got.to_f32_vec(), &want.to_f32_vec());
            println!("LPIPS {c}ch {need:?} d{what} rel err {e:.2e}");
            assert!(e < 1e-3, "{c}ch {need:?}: d{what} differs by {e:.3e}");
        }
    }
}

#[test]
fn lpips_on_cuda_matches_cpu() {
    if !gpu_or_skip() {
        return;
    }
    set_cuda_precision("fp32").expect("precision");
    let cpu = Lpips::new(NARROW, &mut Init::random(11)).expect("cpu lpips");
    let mut gpu = Lpips::new(NARROW, &mut Init::random(11)).expect("gpu lpips");
    move_params(&mut gpu, GPU).expect("LPIPS to the GPU");
    for c in [1, 3] {
        for need in [Need::BOTH, Need::INPUT, Need::TARGET, Need::NONE] {
            compare(&cpu, &gpu, c, need);
        }
    }
    // Images on the CPU against parameters on the GPU: an error, not a silent copy.
    let x = image(&[1, 16, 16, 3], 1);
    assert!(gpu.distance(&x, &x, Need::NONE).is_err());
}
