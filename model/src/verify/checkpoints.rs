//! Checkpoint cases: a golden file holding only `param.*` tensors (no op, module, loss or
//! loader) is the state a model must have after loading the PyTorch checkpoint files stored
//! beside it (`*.ckpt`, `*.bin`, `*.pt`, `*.pth`). Each of those files is read with the safe
//! reader, loaded into an `AutoencoderKL` built from the reference's shapes, exported
//! again and compared with the reference, key by key:
//! * a checkpoint must load exactly into the model the reference's shapes describe (no
//!   missing, unexpected or mis-shaped keys) and reproduce every tensor;
//! * a 2D checkpoint beside a 3D reference is inflated as the reference's `init_from_ckpt`
//!   does, and only the keys it provides are compared (the others keep the 3D model's own
//!   random initialisation, which no two implementations share).
//!
//! A half-precision checkpoint is compared against the reference rounded to its storage type,
//! so the check proves the decoding exact rather than "close to f32".

use super::{Check, Outcome};
use crate::autoencoder::AutoencoderKL;
use crate::layers::state::{load_state_dict, param_shapes, to_state_dict};
use crate::layers::Init;
use crate::zoo::ModelConfig;
use medvae_runtime::checkpoint::{
    inflate_2d_to_3d_with_report, load_checkpoint, StateDict, StoredDType,
};
use medvae_runtime::golden::{rel_error, GoldenCase};
use medvae_runtime::{Result, RuntimeError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Stored tensors are decoded exactly; this only absorbs nothing but bit-level noise.
const TOL_EXACT: f64 = 1e-7;

/// Whether `case` is a checkpoint case (only `param.*` tensors, no op/module/loss/loader).
pub fn is_checkpoint_case(case: &GoldenCase) -> bool {
    let described = ["op", "module", "loss", "loader"]
        .iter()
        .any(|k| case.meta.get(k).is_some());
    !described && !case.tensors.is_empty() && case.tensors.keys().all(|k| k.starts_with("param."))
}

/// The PyTorch checkpoint files beside the case, sorted.
fn sibling_checkpoints(case_path: &Path) -> Result<Vec<PathBuf>> {
    let dir = case_path.parent().unwrap_or(Path::new("."));
    let entries =
        std::fs::read_dir(dir).map_err(|e| RuntimeError::file(dir, format!("cannot list: {e}")))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "ckpt" | "bin" | "pt" | "pth"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Run a checkpoint case: one check per checkpoint file beside it.
pub fn run(case: &GoldenCase) -> Outcome {
    match run_checked(case) {
        Ok(checks) => Outcome::Checked(checks),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

fn run_checked(case: &GoldenCase) -> Result<Vec<Check>> {
    let expected: BTreeMap<&str, (&[usize], &[f32])> = case
        .tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("param.")
                .map(|key| (key, (t.shape.as_slice(), t.data.as_slice())))
        })
        .collect();
    let expected_shapes: Vec<(String, Vec<usize>)> = expected
        .iter()
        .map(|(k, (s, _))| (k.to_string(), s.to_vec()))
        .collect();
    let files = sibling_checkpoints(&case.path)?;
    if files.is_empty() {
        return Err(RuntimeError::file(
            &case.path,
            "a checkpoint case needs .ckpt/.bin/.pt/.pth files beside it",
        ));
    }
    let mut checks = Vec::new();
    for file in files {
        let label = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let state = load_checkpoint(&file).map_err(|e| RuntimeError::Other(e.to_string()))?;
        let inflating = rank_of(&state.shapes()) == Some(4) && rank_of(&expected_shapes) == Some(5);
        let compared = if inflating {
            load_inflated(&file, &state, &expected_shapes)?
        } else {
            load_exact(&file, &state, &expected_shapes)?
        };
        let storage = storage_of(&state);
        let mut worst = 0.0f64;
        for (key, got) in &compared {
            let Some((shape, want)) = expected.get(key.as_str()) else {
                return Err(RuntimeError::file(
                    &file,
                    format!("`{key}` is not in the reference {}", case.path.display()),
                ));
            };
            if got.0 != *shape {
                return Err(RuntimeError::file(
                    &file,
                    format!("`{key}`: shape {:?}, reference {:?}", got.0, shape),
                ));
            }
            let want = round_to(want, storage);
            worst = worst.max(rel_error(&got.1, &want));
        }
        checks.push(Check {
            tensor: format!("{label} ({} keys)", compared.len()),
            rel_err: Some(worst),
            tol: TOL_EXACT,
        });
    }
    Ok(checks)
}

type Compared = Vec<(String, (Vec<usize>, Vec<f32>))>;

/// Load a checkpoint into the model the reference describes; every key must match exactly.
fn load_exact(file: &Path, state: &StateDict, shapes: &[(String, Vec<usize>)]) -> Result<Compared> {
    let cfg = ModelConfig::from_state_dict_shapes(shapes)?;
    let mut model = AutoencoderKL::new(&cfg, &mut Init::Zeros)?;
    load_state_dict(&mut model, state)?.ensure_exact(&file.display().to_string())?;
    exported(&mut model, None)
}

/// Inflate a 2D checkpoint into the 3D model the reference describes; compare what it gives.
fn load_inflated(
    file: &Path,
    state: &StateDict,
    shapes3d: &[(String, Vec<usize>)],
) -> Result<Compared> {
    let cfg = ModelConfig::from_state_dict_shapes(shapes3d)?;
    let mut model = AutoencoderKL::new(&cfg, &mut Init::Zeros)?;
    let (inflated, report) = inflate_2d_to_3d_with_report(state, &param_shapes(&mut model));
    if report.copied.is_empty() && report.inflated.is_empty() {
        return Err(RuntimeError::file(
            file,
            "no tensor of this checkpoint fits the 3D model of the reference",
        ));
    }
    let load = load_state_dict(&mut model, &inflated)?;
    if !load.unexpected.is_empty() || !load.mismatched.is_empty() {
        return Err(RuntimeError::file(file, format!("inflated state: {load}")));
    }
    let provided: Vec<&str> = inflated.keys().collect();
    exported(&mut model, Some(&provided))
}

fn exported(model: &mut AutoencoderKL, only: Option<&[&str]>) -> Result<Compared> {
    let sd = to_state_dict(model, "exported")?;
    Ok(sd
        .iter()
        .filter(|(k, _)| only.is_none_or(|keys| keys.contains(k)))
        .filter_map(|(k, t)| {
            let data = t
                .as_f32()
                .map(<[f32]>::to_vec)
                .or_else(|| t.as_i64().map(|v| v.iter().map(|&x| x as f32).collect()))?;
            Some((k.to_string(), (t.shape.clone(), data)))
        })
        .collect())
}

/// The rank of `encoder.conv_in.weight` (4 = 2D, 5 = 3D), if present.
fn rank_of(shapes: &[(String, Vec<usize>)]) -> Option<usize> {
    shapes
        .iter()
        .find(|(k, _)| k == "encoder.conv_in.weight")
        .map(|(_, s)| s.len())
}

/// The floating storage type of a checkpoint (the first float tensor's).
fn storage_of(state: &StateDict) -> StoredDType {
    state
        .iter()
        .map(|(_, t)| t.dtype)
        .find(|d| d.is_float())
        .unwrap_or(StoredDType::F32)
}

fn round_to(v: &[f32], storage: StoredDType) -> Vec<f32> {
    match storage {
        StoredDType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        StoredDType::BF16 => v
            .iter()
            .map(|&x| half::bf16::from_f32(x).to_f32())
            .collect(),
        _ => v.to_vec(),
    }
}
