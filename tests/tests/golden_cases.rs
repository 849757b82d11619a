//! Every golden case of the categories the engine implements passes, through the same
//! verifier `medvae-fast verify` uses.

use medvae_model::verify::{verify_dir, VerifyOptions};
use medvae_runtime::Device;
use medvae_tests::golden_dir;

fn run_all(filter: &str) {
    let opts = VerifyOptions {
        device: Device::Cpu,
        filter: Some(filter.to_string()),
    };
    let mut lines = Vec::new();
    // Unsupported counts as bad here: these are categories the engine claims.
    let mut bad = Vec::new();
    let summary = verify_dir(&golden_dir(), &opts, |r| {
        lines.push(r.line());
        if r.passed() != Some(true) {
            bad.push(r.line());
        }
    })
    .expect("golden directory readable");
    for l in &lines {
        println!("{l}");
    }
    println!("{}", summary.line());
    assert!(summary.passed > 0, "no `{filter}` cases found");
    assert!(
        bad.is_empty(),
        "failing or unsupported cases:\n{}",
        bad.join("\n")
    );
}

#[test]
fn every_golden_op_passes() {
    run_all("ops/");
}

#[test]
fn every_golden_preprocess_case_passes() {
    run_all("preprocess/");
}

#[test]
fn every_golden_module_passes() {
    run_all("modules/");
}

#[test]
fn every_golden_checkpoint_case_passes() {
    run_all("checkpoints/");
}

#[test]
fn every_golden_vit_case_passes() {
    run_all("vit/");
}

#[test]
fn every_golden_loss_case_passes() {
    run_all("losses/");
}

#[test]
fn every_bundled_quality_case_passes() {
    // The reconstruction metrics' cases ship with the repository (scripts/make_quality_golden.py).
    let opts = VerifyOptions {
        device: Device::Cpu,
        filter: Some("quality/".into()),
    };
    let dir = medvae_tests::repo_root().join("tests/golden");
    let mut bad = Vec::new();
    let summary = verify_dir(&dir, &opts, |r| {
        println!("{}", r.line());
        if r.passed() != Some(true) {
            bad.push(r.line());
        }
    })
    .expect("tests/golden readable");
    assert!(summary.passed >= 5, "{}", summary.line());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
