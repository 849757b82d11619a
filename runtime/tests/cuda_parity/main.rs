//! CUDA kernels against the CPU kernels (and f64 references where the CPU has no counterpart),
//! on fresh random inputs, several shapes per kernel. Tolerances (relative L2 error): f32
//! kernels 1e-4, TF32 convolution 5e-3, BF16 convolution 3e-2.
//!
//! Without a GPU (no driver, no device, or no NVRTC to compile the kernels) every test prints
//! "skipped: <reason>" and passes. Run on a GPU machine with:
//!   cargo test --release -p medvae-runtime --test cuda_parity -- --nocapture
#![cfg(feature = "cuda")]

mod attention;
mod conv;
mod misc;
mod norm;
mod support;

use medvae_runtime::cuda::{probe, CudaError};

#[test]
fn probe_reports_instead_of_panicking() {
    match probe() {
        Ok(info) => {
            assert!(!info.devices.is_empty());
            for d in &info.devices {
                println!(
                    "cuda:{} {} sm_{}{} {} SMs {:.1} GiB, driver {}",
                    d.ordinal,
                    d.name,
                    d.compute_capability.0,
                    d.compute_capability.1,
                    d.multiprocessors,
                    d.total_memory as f64 / (1u64 << 30) as f64,
                    info.driver_version
                );
            }
        }
        Err(CudaError::NotAvailable(why)) => println!("skipped: {why}"),
        Err(e) => panic!("probe must report NotAvailable, got {e}"),
    }
}
