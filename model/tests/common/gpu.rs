//! Helpers of the CUDA-vs-CPU model tests: the device, the skip rule, and the worst error over
//! a set of exported tensors.

use medvae_model::layer::Parameters;
use medvae_model::layers::state::{export_params, load_params, ExportedTensor};
use medvae_runtime::golden::rel_error_at_scale;
use medvae_runtime::Device;

pub const GPU: Device = Device::Cuda(0);

/// True when a GPU can be used; otherwise prints "skipped: <reason>" (the test then passes).
pub fn gpu_or_skip() -> bool {
    match GPU.ensure_available() {
        Ok(_) => true,
        Err(e) => {
            println!("skipped: {e}");
            false
        }
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// The worst error over `gpu` against `cpu` (same keys, same order), each tensor judged against
/// the largest tensor's norm, as `verify` does (runtime/src/golden.rs): values that are 0 in
/// exact arithmetic (the attention key bias's gradient: softmax ignores a per-row constant) are
/// rounding noise in both engines. Prints the result, naming `what` and the worst key.
pub fn worst(what: &str, gpu: &[ExportedTensor], cpu: &[ExportedTensor]) -> f64 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: same tensors");
    let scale = cpu.iter().map(|t| norm(&t.data)).fold(0.0f64, f64::max);
    let mut worst = (0.0f64, String::new());
    for (g, c) in gpu.iter().zip(cpu) {
        assert_eq!(g.key, c.key);
        let e = rel_error_at_scale(&g.data, &c.data, scale);
        if e > worst.0 {
            worst = (e, c.key.clone());
        }
    }
    println!(
        "{what}: {} tensors, worst rel err {:.2e} ({})",
        cpu.len(),
        worst.0,
        worst.1
    );
    worst.0
}

/// Nudge every parameter of `model` by one unit in the last place, up or down at random
/// (`seed`): a copy of the CPU reference so treated measures how far each of its gradients moves
/// under rounding-sized changes, the noise floor that [`worst_beyond_noise`] holds the GPU to.
pub fn nudge_one_ulp(model: &mut dyn Parameters, seed: u64) {
    let mut params = export_params(model);
    let mut state = seed;
    for v in params.iter_mut().flat_map(|t| t.data.iter_mut()) {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let sign = if state >> 63 == 1 { 1.0 } else { -1.0 };
        *v *= 1.0 + sign * f32::EPSILON;
    }
    load_params(
        model,
        params
            .iter()
            .map(|t| (t.key.as_str(), t.shape.as_slice(), t.data.as_slice())),
    )
    .expect("the model's own parameters load back");
}

/// How many times a tensor's sensitivity to a one-ulp nudge of the weights the GPU may differ
/// from the CPU. A CUDA step re-orders every FP32 sum (thousands of terms per convolution
/// output) where the nudge perturbs each product once, so the two are proportional, not equal:
/// on an H200 the worst ratio was about 20 (the 3D quant_conv weight gradient, whose terms
/// cancel). A wrong index or a missing term gives errors of order 1, far past this.
pub const NOISE_FACTOR: f64 = 32.0;

/// Like [`worst`], but each tensor may differ by `max(tol, NOISE_FACTOR x` the CPU's own change
/// under a one-ulp nudge (`nudged`, same keys and order)`)`: a gradient whose terms cancel
/// (the scalar post_quant_conv weight's) moves 7e-4 under the nudge alone. Returns the worst
/// error over its allowance; at most 1 passes. Prints the worst error and allowance.
pub fn worst_beyond_noise(
    what: &str,
    gpu: &[ExportedTensor],
    cpu: &[ExportedTensor],
    nudged: &[ExportedTensor],
    tol: f64,
) -> f64 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: same tensors");
    assert_eq!(nudged.len(), cpu.len(), "{what}: same tensors");
    let scale = cpu.iter().map(|t| norm(&t.data)).fold(0.0f64, f64::max);
    let mut worst = (0.0f64, 0.0f64, tol, String::from("none differ"));
    for ((g, c), n) in gpu.iter().zip(cpu).zip(nudged) {
        assert_eq!(g.key, c.key);
        assert_eq!(n.key, c.key);
        let e = rel_error_at_scale(&g.data, &c.data, scale);
        let allowed = tol.max(NOISE_FACTOR * rel_error_at_scale(&n.data, &c.data, scale));
        if e / allowed > worst.0 {
            worst = (e / allowed, e, allowed, c.key.clone());
        }
    }
    println!(
        "{what}: {} tensors, worst rel err {:.2e} of {:.2e} allowed ({})",
        cpu.len(),
        worst.1,
        worst.2,
        worst.3
    );
    worst.0
}
