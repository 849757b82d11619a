//! CUDA kernels against the CPU kernels (and f64 references where the CPU has no counterpart),
//! on fresh random inputs, several shapes per kernel. Tolerances (relative L2 error): f32
//! kernels 1e-4, TF32 convolution 5e-3, BF16 convolution 3e-2.
//!
//! Without a GPU (no driver, no device, or no NVRTC to compile the kernels) every test prints
//! "skipped: <reason>" and passes. Run on a GPU machine with:
//!   cargo test --release -p medvae-runtime --test cuda_parity -- --nocapture
#![cfg(feature = "cuda")]

mod attention;
mod collective;
mod conv;
mod conv_tiles;
mod linear_resize;
mod misc;
mod norm;
mod perceptual;
mod reductions;
mod slices;
mod strided;
mod support;
mod tensor_ops;

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

/// The on-disk image cache: a compiled CUBIN is stored under `<sha256>-sm_XX.cubin` and read
/// back instead of recompiling. Needs NVRTC only (no GPU).
#[test]
fn kernel_image_cache_is_written_and_read_back() {
    use medvae_kernels::cuda::arch::cache_file_name;
    use medvae_kernels::cuda::{nvrtc, registry, Arch, Target};
    use medvae_runtime::cuda::module::module_image;
    if let Err(e) = nvrtc::version() {
        println!("skipped: {e}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("medvae-ptx-cache-test-{}", std::process::id()));
    let src = registry::source("adam").expect("adam registered");
    let arch = Arch::parse("sm_90").expect("arch");
    let (target, image) = module_image(src, arch, Some(&dir)).expect("compiles");
    assert_eq!(target, Target::Cubin);
    assert_eq!(&image[..4], b"\x7fELF");
    let file = dir.join(cache_file_name(src, arch, target));
    assert_eq!(std::fs::read(&file).expect("cached file"), image);
    // A second lookup must come from the file, not from NVRTC.
    std::fs::write(&file, b"marker").expect("write");
    let (_, again) = module_image(src, arch, Some(&dir)).expect("cached");
    assert_eq!(again, b"marker");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs last (libtest orders tests by name; gpu-check runs them on one thread): with
/// `MEDVAE_CUDA_PROFILE=1`, lists the kernel entry points the parity tests never launched, so a
/// GPU run shows which tile variants remain unexercised.
#[test]
fn zz_kernel_coverage() {
    use medvae_kernels::cuda::registry::SOURCES;
    use medvae_runtime::cuda::profile;
    if support::device().is_none() {
        return;
    }
    if !profile::enabled() {
        println!("skipped: set MEDVAE_CUDA_PROFILE=1 to record which kernels ran");
        return;
    }
    let launched: std::collections::HashSet<String> =
        profile::report().into_iter().map(|k| k.entry).collect();
    let all: Vec<&str> = SOURCES
        .iter()
        .flat_map(|s| s.entry_points.iter().copied())
        .collect();
    let missing: Vec<&str> = all
        .iter()
        .copied()
        .filter(|e| !launched.contains(*e))
        .collect();
    println!(
        "kernel coverage: {} of {} entry points launched; never launched: {}",
        all.len() - missing.len(),
        all.len(),
        if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        }
    );
}
