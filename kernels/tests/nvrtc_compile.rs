//! Every CUDA module compiles with NVRTC for sm_80 and sm_90, and its PTX declares exactly the
//! entry points the registry lists. Needs the NVRTC library (scripts/install-nvrtc.sh); without
//! it the test prints "skipped: <reason>" and passes, so CPU-only machines stay green.
#![cfg(feature = "cuda")]

use medvae_kernels::cuda::arch::include_paths_from_env;
use medvae_kernels::cuda::{nvrtc, Arch, Target, SOURCES};

#[test]
fn every_module_compiles_for_sm80_and_sm90() {
    let version = match nvrtc::version() {
        Ok(v) => v,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    println!("NVRTC {}.{}", version.0, version.1);
    let includes = include_paths_from_env();
    let mut failures = Vec::new();
    for arch in ["sm_80", "sm_90"] {
        let arch = Arch::parse(arch).expect("valid arch");
        for src in SOURCES {
            match nvrtc::compile(src, arch, Target::Ptx, &includes) {
                Ok(c) => {
                    let ptx = c.ptx().expect("PTX is text");
                    let mut entries = nvrtc::ptx_entries(ptx);
                    entries.sort();
                    let mut listed: Vec<String> =
                        src.entry_points.iter().map(|s| s.to_string()).collect();
                    listed.sort();
                    assert_eq!(
                        entries, listed,
                        "{} {arch}: PTX entries differ from the registry",
                        src.name
                    );
                    println!("{:<16} {arch}  OK  {} bytes PTX", src.name, c.image.len());
                }
                Err(e) => failures.push(format!("{} {arch}: {e}", src.name)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "compile failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn cubin_target_compiles_too() {
    if let Err(e) = nvrtc::version() {
        println!("skipped: {e}");
        return;
    }
    let src = medvae_kernels::cuda::registry::source("adam").expect("adam registered");
    let c = nvrtc::compile(src, Arch::parse("sm_90").expect("arch"), Target::Cubin, &[])
        .expect("compiles");
    assert_eq!(&c.image[..4], b"\x7fELF", "a CUBIN is an ELF image");
}

#[test]
fn a_broken_source_reports_the_compile_log() {
    if let Err(e) = nvrtc::version() {
        println!("skipped: {e}");
        return;
    }
    let bad = medvae_kernels::cuda::KernelSource {
        name: "broken",
        file: "broken.cu",
        source: "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }",
        entry_points: &["k"],
        hopper_features: false,
    };
    match nvrtc::compile(&bad, Arch::parse("sm_80").expect("arch"), Target::Ptx, &[]) {
        Err(medvae_kernels::cuda::CompileError::Compile { log, .. }) => {
            assert!(log.contains("undefined_name"), "log: {log}")
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}
