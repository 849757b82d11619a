//! Shared helpers: the device (opened once), random data, error metrics.

use medvae_runtime::cuda::{CudaDevice, DeviceBuffer};
use medvae_runtime::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::OnceLock;

/// The device every test uses, or None (after printing why) when there is none.
pub fn device() -> Option<&'static CudaDevice> {
    static DEV: OnceLock<Result<CudaDevice, String>> = OnceLock::new();
    let d = DEV.get_or_init(|| {
        let dev = CudaDevice::new(0).map_err(|e| e.to_string())?;
        // Compile (or load) every module up front, so a missing NVRTC is a skip, not a failure.
        dev.load_all_kernels().map_err(|e| e.to_string())?;
        Ok(dev)
    });
    match d {
        Ok(dev) => Some(dev),
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// The device of the tensor-level tests.
pub const GPU: Device = Device::Cuda(0);

/// The same random tensor (standard normal times `scale`) on the CPU and on the GPU.
pub fn tensor_pair(shape: &[usize], seed: u64, scale: f32) -> (Tensor, Tensor) {
    let n = shape.iter().product();
    let cpu = Tensor::from_vec(shape, randn(&mut rng(seed), n, scale)).expect("tensor");
    let gpu = cpu.to_device(GPU).expect("upload");
    (cpu, gpu)
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Standard normal samples times `scale` (Box-Muller).
pub fn randn(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = r.gen_range(1e-12..1.0);
            let u2: f64 = r.gen_range(0.0..1.0);
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * scale
        })
        .collect()
}

pub fn uniform(r: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(lo..hi)).collect()
}

/// ||a - b|| / ||b|| (absolute when b = 0); infinite if `a` has a non-finite value.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub fn assert_close(what: &str, gpu: &[f32], reference: &[f32], tol: f64) {
    let e = rel_err(gpu, reference);
    println!("{what:<56} rel err {e:.2e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

pub fn up(dev: &CudaDevice, v: &[f32]) -> DeviceBuffer {
    dev.upload(v).expect("upload")
}

pub fn down(dev: &CudaDevice, b: &DeviceBuffer, n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    dev.download(b, &mut v).expect("download");
    v
}
