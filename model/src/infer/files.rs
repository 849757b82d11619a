//! Which files an inference run reads and where each output goes.
//!
//! * `IN` a folder: every file directly inside it (not in subfolders, as the reference's
//!   `os.listdir`) that the model reads — `.png` for a 2D model, `.nii`/`.nii.gz` for a 3D one —
//!   in name order; files of the other kind are listed as skipped. `OUT` is a folder and each
//!   latent is `OUT/<name>.nii.gz`.
//! * `IN` a file: `OUT` ending in `.nii.gz` / `.nii` is the output file; anything else is a
//!   folder that receives `<name>.nii.gz`.
//! * With `--decode` the reconstruction goes beside the latent as `<latent name>_decoded.nii.gz`.

use super::error::InferError;
use super::run::{input_kind, output_stem, InputKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One file to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub input: PathBuf,
    pub latent: PathBuf,
    pub decoded: Option<PathBuf>,
    /// Set when the job cannot run (its output would overwrite another job's).
    pub conflict: Option<String>,
}

/// The jobs of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Files in the input folder that only a model of the other dimensionality reads.
    pub skipped: Vec<PathBuf>,
    /// The folder outputs go into (to be created).
    pub out_dir: PathBuf,
    /// `OUT` named the one output file itself (a single input and a `.nii.gz` / `.nii` name).
    pub named_output: bool,
}

fn is_nifti_name(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".nii.gz") || name.ends_with(".nii")
}

/// `X.nii.gz` → `X_decoded.nii.gz` (and `.nii` likewise).
pub fn decoded_path(latent: &Path) -> PathBuf {
    let name = latent
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    let cut = [".nii.gz", ".nii"]
        .iter()
        .find(|s| lower.ends_with(*s))
        .map_or(name.len(), |s| name.len() - s.len());
    latent.with_file_name(format!("{}_decoded{}", &name[..cut], &name[cut..]))
}

/// The files directly inside the folder `input` that a model reading `reads` takes (name
/// order), and those only the other kind of model reads; an error when it holds none it takes.
fn list_folder(input: &Path, reads: InputKind) -> Result<(Vec<PathBuf>, Vec<PathBuf>), InferError> {
    let setup = |m: String| InferError::Setup(m);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| setup(format!("cannot list {}: {e}", input.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mut take = Vec::new();
    let mut skip = Vec::new();
    for p in entries {
        match input_kind(&p) {
            Some(k) if k == reads => take.push(p),
            Some(_) => skip.push(p),
            None => {}
        }
    }
    if take.is_empty() {
        let what = match reads {
            InputKind::Png => ".png images (this is a 2D model)",
            InputKind::Nifti => ".nii / .nii.gz volumes (this is a 3D model)",
        };
        return Err(setup(format!("{} holds no {what}", input.display())));
    }
    Ok((take, skip))
}

/// The inputs `input` names (a file, or a folder's files as [`plan`] lists them) and the
/// folder's files of the other kind, for runs that write nothing (`eval`).
pub fn list_inputs(
    input: &Path,
    reads: InputKind,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), InferError> {
    let meta = std::fs::metadata(input)
        .map_err(|e| InferError::Setup(format!("input {}: {e}", input.display())))?;
    if meta.is_dir() {
        list_folder(input, reads)
    } else {
        Ok((vec![input.to_path_buf()], vec![]))
    }
}

/// Work out the jobs for `input` → `output` when the model reads `reads`.
pub fn plan(
    input: &Path,
    output: &Path,
    reads: InputKind,
    decode: bool,
) -> Result<Plan, InferError> {
    let setup = |m: String| InferError::Setup(m);
    let meta =
        std::fs::metadata(input).map_err(|e| setup(format!("input {}: {e}", input.display())))?;
    let (inputs, skipped, out_dir, single_out) = if meta.is_dir() {
        if output.is_file() {
            return Err(setup(format!(
                "input {} is a folder, so the output must be a folder; {} is a file",
                input.display(),
                output.display()
            )));
        }
        let (take, skip) = list_folder(input, reads)?;
        (take, skip, output.to_path_buf(), None)
    } else if is_nifti_name(output) && !output.is_dir() {
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (
            vec![input.to_path_buf()],
            vec![],
            dir,
            Some(output.to_path_buf()),
        )
    } else {
        (
            vec![input.to_path_buf()],
            vec![],
            output.to_path_buf(),
            None,
        )
    };

    let named_output = single_out.is_some();
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    let jobs = inputs
        .into_iter()
        .map(|input| {
            let latent = single_out
                .clone()
                .unwrap_or_else(|| out_dir.join(format!("{}.nii.gz", output_stem(&input))));
            let conflict = seen.get(&latent).map(|first| {
                format!(
                    "its output {} is also {}'s output",
                    latent.display(),
                    first.display()
                )
            });
            seen.entry(latent.clone()).or_insert_with(|| input.clone());
            Job {
                decoded: decode.then(|| decoded_path(&latent)),
                input,
                latent,
                conflict,
            }
        })
        .collect();
    Ok(Plan {
        jobs,
        skipped,
        out_dir,
        named_output,
    })
}
