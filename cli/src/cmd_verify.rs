//! `medvae-fast verify --golden DIR [--filter PREFIX] [--device D]`.

use anyhow::{bail, Context, Result};
use medvae_model::verify::{verify_dir, VerifyOptions};
use medvae_runtime::Device;
use std::path::Path;
use std::process::ExitCode;

pub fn run(dir: &Path, filter: Option<String>, device: &str) -> Result<ExitCode> {
    if !dir.is_dir() {
        bail!("--golden {}: not a directory", dir.display());
    }
    let device: Device = device.parse()?;
    device
        .ensure_available()
        .with_context(|| format!("cannot verify on {device}"))?;
    let opts = VerifyOptions { device, filter };
    let summary = verify_dir(dir, &opts, |report| println!("{}", report.line()))?;
    println!("{}", summary.line());
    if summary.passed + summary.failed + summary.unsupported == 0 {
        eprintln!("no golden cases found under {}", dir.display());
        return Ok(ExitCode::FAILURE);
    }
    Ok(if summary.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
