//! Helpers of the CUDA-vs-CPU model tests: the device, the skip rule, and the worst error over
//! a set of exported tensors.

use medvae_model::layers::state::ExportedTensor;
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
