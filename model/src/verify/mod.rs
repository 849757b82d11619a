//! `medvae-fast verify`: run every golden case in a directory through the engine.
//!
//! Dispatch is on each case's metadata (`op`, `module`, `loss`, `loader` and their
//! configuration) and on the tensors present, never on file names, so any directory in the
//! format of `shared/golden/README.md` can be checked. Every `out.*`, `grad.*` and `buf.*`
//! tensor of a supported case must be produced and match: one the engine did not compute is a
//! failure, not a skip.

mod checkpoints;
mod losses;
mod modules;
mod ops;
mod preprocess;
mod quality;
mod stage2;
mod tensors;
mod vit;

use medvae_runtime::golden::{find_cases, norm, rel_error_at_scale, GoldenCase};
use medvae_runtime::{Device, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Tensors produced by the engine for a case, keyed by golden name (`out.y`, `grad.in.x`, ...),
/// in the golden (PyTorch) layout.
pub type Produced = BTreeMap<String, Vec<f32>>;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub device: Device,
    /// Only cases whose path relative to the directory starts with this.
    pub filter: Option<String>,
}

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct Check {
    pub tensor: String,
    /// `None` when the engine did not produce the tensor (a failure).
    pub rel_err: Option<f64>,
    pub tol: f64,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.rel_err.is_some_and(|e| e <= self.tol)
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Checked(Vec<Check>),
    /// The engine does not (yet) implement what the case describes.
    Unsupported(String),
    /// The case could not be loaded or run: a failure.
    Error(String),
}

#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    pub outcome: Outcome,
}

impl CaseReport {
    /// `Some(true)` passed, `Some(false)` failed, `None` unsupported.
    pub fn passed(&self) -> Option<bool> {
        match &self.outcome {
            Outcome::Checked(c) => Some(!c.is_empty() && c.iter().all(Check::passed)),
            Outcome::Unsupported(_) => None,
            Outcome::Error(_) => Some(false),
        }
    }

    /// The one-line summary `verify` prints.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Checked(checks) => {
                let status = if self.passed() == Some(true) {
                    "PASS"
                } else {
                    "FAIL"
                };
                let parts: Vec<String> = checks
                    .iter()
                    .map(|c| match c.rel_err {
                        Some(e) if c.passed() => format!("{} {:.1e}", c.tensor, e),
                        Some(e) => format!("{} {:.1e} (> {:.0e})", c.tensor, e, c.tol),
                        None => format!("{} NOT COMPUTED", c.tensor),
                    })
                    .collect();
                if checks.is_empty() {
                    format!("{status} {}  (no reference tensors to compare)", self.name)
                } else {
                    format!("{status} {}  {}", self.name, parts.join("  "))
                }
            }
            Outcome::Unsupported(why) => format!("UNSUPPORTED {}  {why}", self.name),
            Outcome::Error(e) => format!("FAIL {}  error: {e}", self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "verify: {} passed, {} failed, {} unsupported",
            self.passed, self.failed, self.unsupported
        )
    }
}

/// Verify every case under `dir`, calling `each` after each case (for printing/progress).
pub fn verify_dir(
    dir: &Path,
    opts: &VerifyOptions,
    mut each: impl FnMut(&CaseReport),
) -> Result<Summary> {
    let mut summary = Summary::default();
    for path in find_cases(dir)? {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let name = rel.with_extension("").to_string_lossy().replace('\\', "/");
        if let Some(f) = &opts.filter {
            if !name.starts_with(f.as_str()) {
                continue;
            }
        }
        let report = verify_case(&path, &name, opts);
        match report.passed() {
            Some(true) => summary.passed += 1,
            Some(false) => summary.failed += 1,
            None => summary.unsupported += 1,
        }
        each(&report);
    }
    Ok(summary)
}

/// Load and verify one case file.
pub fn verify_case(path: &Path, name: &str, opts: &VerifyOptions) -> CaseReport {
    let outcome = match GoldenCase::load(path) {
        Err(e) => Outcome::Error(e.to_string()),
        // The reference state after loading the checkpoint files beside it.
        Ok(case) if checkpoints::is_checkpoint_case(&case) => checkpoints::run(&case),
        Ok(case) => match run_case(&case, opts) {
            Err(e) => Outcome::Error(e.to_string()),
            Ok(None) => Outcome::Unsupported(describe(&case, opts.device)),
            Ok(Some(produced)) => Outcome::Checked(compare(&case, &produced, opts.device)),
        },
    };
    CaseReport {
        name: name.to_string(),
        outcome,
    }
}

/// Run the engine on a case. `Ok(None)` = not supported by this engine (yet).
fn run_case(case: &GoldenCase, opts: &VerifyOptions) -> Result<Option<Produced>> {
    // On CUDA only the cases whose every op has a CUDA kernel run (op cases check their list);
    // the rest are reported as unsupported rather than silently computed on the CPU. Data
    // loading is host code by design.
    if !opts.device.is_cpu() && case.meta.get("loader").is_some() {
        return Ok(None);
    }
    // The reconstruction metrics are host code too.
    if quality::handles(case) {
        return if opts.device.is_cpu() {
            quality::run(case)
        } else {
            Ok(None)
        };
    }
    // The BiomedCLIP tower and the stage-2 loss (matched on their exact metadata strings).
    if vit::handles(case) {
        return vit::run(case, opts.device);
    }
    if stage2::handles(case) {
        return stage2::run(case, opts.device);
    }
    // LPIPS (2D, over slices) and the stage-1 losses.
    if losses::handles(case) {
        return losses::run(case, opts.device);
    }
    if case.meta.get("op").is_some() {
        return ops::run(case, opts.device);
    }
    if case.meta.get("loader").is_some() {
        // Data loading runs on the CPU whatever the compute device.
        return preprocess::run(case);
    }
    if case.meta.get("module").is_some() {
        return modules::run(case, opts.device);
    }
    Ok(None)
}

fn describe(case: &GoldenCase, device: Device) -> String {
    if !device.is_cpu() {
        if case.meta.get("loader").is_some() {
            return "data loading runs on the CPU: verify it with --device cpu".into();
        }
        if quality::handles(case) {
            return "the reconstruction metrics run on the CPU: verify them with --device cpu"
                .into();
        }
        return format!("not yet dispatched to {device} (passes with --device cpu)");
    }
    for key in ["op", "module", "loss", "loader"] {
        if let Some(v) = case.meta.get(key) {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            return format!("{key} `{v}` is not implemented");
        }
    }
    "metadata names no op, module, loss or loader".to_string()
}

/// Compare every reference output of the case with what the engine produced.
fn compare(case: &GoldenCase, produced: &Produced, device: Device) -> Vec<Check> {
    // Gradients are judged against the largest gradient of the case where their reference
    // is zero up to rounding (see `rel_error_at_scale`); other tensors plainly.
    let grad_scale = case
        .tensors
        .iter()
        .filter(|(name, _)| name.starts_with("grad."))
        .map(|(_, t)| norm(&t.data))
        .fold(0.0, f64::max);
    let mut checks = Vec::new();
    for (name, want) in &case.tensors {
        // Loader cases hold only outputs (`img`); other cases mark outputs by prefix.
        let is_output = case.meta.get("loader").is_some()
            || name.starts_with("out.")
            || name.starts_with("grad.")
            || name.starts_with("buf.");
        if !is_output {
            continue;
        }
        let tol = tolerance(case, name, device);
        let scale = if name.starts_with("grad.") {
            grad_scale
        } else {
            0.0
        };
        let rel_err = produced
            .get(name)
            .map(|got| rel_error_at_scale(got, &want.data, scale));
        checks.push(Check {
            tensor: name.clone(),
            rel_err,
            tol,
        });
    }
    checks
}

/// Tolerances of shared/golden/README.md: 1e-4 for ops and modules in float32, 1e-3 for
/// whole-model gradients and the stage losses (long reduction chains). A case whose references
/// were computed in float32 (`"reference_dtype": "float32"`, where float64 was out of reach)
/// is itself only that close: PyTorch's float32 SSIM of a 176³ volume lies 5e-4 from a float64
/// one.
fn tolerance(case: &GoldenCase, tensor: &str, _device: Device) -> f64 {
    if case.meta_str("reference_dtype") == Some("float32") {
        return 1e-3;
    }
    let whole_model = case
        .meta
        .get("module")
        .and_then(|m| m.as_str())
        .is_some_and(|m| m.starts_with("AutoencoderKL"));
    if case.meta.get("loss").is_some() || (whole_model && tensor.starts_with("grad.")) {
        1e-3
    } else {
        1e-4
    }
}
