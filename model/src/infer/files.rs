//! Which files an inference run reads and where each output goes.
//!
//! * `IN` a folder: every file directly inside it (not in subfolders, as the reference's
//!   `os.listdir`) that the model reads — `.png` for a 2D model, `.nii`/`.nii.gz` for a 3D one —
//!   in name order; files of the other kind are listed as skipped. `OUT` is a folder and each
//!   latent is `OUT/<name>.nii.gz`.
//! * `IN` a folder, recursively (`--recursive`): the same in every subfolder too (hidden ones
//!   and `OUT` itself left out), depth first in name order; `OUT` mirrors the folders, so
//!   `IN/sub-01/anat/t1.nii.gz` gives `OUT/sub-01/anat/t1.nii.gz`. What a folder gives is
//!   [`super::listing`]'s (which also leaves medvae-fast's own outputs out of `infer`).
//! * No output may be a file the run reads or lists ([`Plan::check_inputs_kept`]): `-o` equal
//!   to `-i` would otherwise replace each scan with its latent.
//! * `IN` a file: `OUT` ending in `.nii.gz` / `.nii` is the output file; anything else is a
//!   folder that receives `<name>.nii.gz`.
//! * With `--decode` the reconstruction goes beside the latent as `<latent name>_decoded.nii.gz`.

use super::error::InferError;
use super::listing::{list, Select};
use super::provenance::OutputKind;
use super::run::output_stem;
use std::collections::{HashMap, HashSet};
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
    /// Latents and reconstructions medvae-fast wrote, found among the inputs and left out
    /// (with what each holds).
    pub ours: Vec<(PathBuf, OutputKind)>,
    /// The folder outputs go into (to be created).
    pub out_dir: PathBuf,
    /// `OUT` named the one output file itself (a single input and a `.nii.gz` / `.nii` name).
    pub named_output: bool,
}

impl Plan {
    /// Files of the input folder the run leaves out: of the other kind, or medvae-fast's own
    /// outputs.
    pub fn left_out(&self) -> usize {
        self.skipped.len() + self.ours.len()
    }

    /// Refuse a run whose outputs would replace a file it reads, or a file of the other kind
    /// it listed: with `-o` equal to `-i`, `scan.nii.gz`'s latent is `scan.nii.gz` again, and
    /// the scan would be gone. Call it once the outputs are named, before anything is written.
    pub fn check_inputs_kept(&self) -> Result<(), InferError> {
        let read: HashSet<_> = self
            .jobs
            .iter()
            .map(|j| j.input.as_path())
            .chain(self.skipped.iter().map(PathBuf::as_path))
            .filter_map(file_identity)
            .collect();
        let mut clashes = Vec::new();
        for job in &self.jobs {
            for out in std::iter::once(&job.latent).chain(job.decoded.as_ref()) {
                if file_identity(out).is_some_and(|id| read.contains(&id)) {
                    clashes.push(out.display().to_string());
                }
            }
        }
        if clashes.is_empty() {
            return Ok(());
        }
        let shown = clashes.len().min(5);
        Err(InferError::Setup(format!(
            "{} output(s) would replace input files of this run (the output folder is the \
             input folder, or the output file is the input): {}{}. Write to another folder.",
            clashes.len(),
            clashes[..shown].join(", "),
            if clashes.len() > shown {
                format!(" and {} more", clashes.len() - shown)
            } else {
                String::new()
            }
        )))
    }

    /// Create the output folder and, for a recursive run, its subfolders.
    pub fn create_folders(&self) -> Result<(), InferError> {
        let folders: HashSet<&Path> = std::iter::once(self.out_dir.as_path())
            .chain(self.jobs.iter().filter_map(|j| j.latent.parent()))
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        for folder in folders {
            std::fs::create_dir_all(folder).map_err(|e| {
                InferError::Setup(format!("cannot create {}: {e}", folder.display()))
            })?;
        }
        Ok(())
    }
}

/// The directory entry a path names, or `None` when there is none (then nothing is there to
/// replace). Outputs are written to a temporary name and renamed over the entry, which
/// replaces a symbolic link, not its target: so the entry itself counts, never what it links
/// to. On Unix that is the entry's device and inode, which also finds `Scan.nii.gz` and
/// `Scan.NII.GZ` to be one file on a case-insensitive file system (macOS); elsewhere the
/// path with its folder resolved.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<PathBuf> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(parent).ok()?.join(path.file_name()?))
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

/// Work out the jobs for `input` → `output` for a run that reads `select`.
pub fn plan(input: &Path, output: &Path, select: Select, decode: bool) -> Result<Plan, InferError> {
    let setup = |m: String| InferError::Setup(m);
    let is_dir = std::fs::metadata(input)
        .map_err(|e| setup(format!("input {}: {e}", input.display())))?
        .is_dir();
    if is_dir && output.is_file() {
        return Err(setup(format!(
            "input {} is a folder, so the output must be a folder; {} is a file",
            input.display(),
            output.display()
        )));
    }
    let found = list(input, select, Some(output))?;
    let (out_dir, single_out) = if !is_dir && is_nifti_name(output) && !output.is_dir() {
        let dir = output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (dir, Some(output.to_path_buf()))
    } else {
        (output.to_path_buf(), None)
    };

    let named_output = single_out.is_some();
    // A file in a subfolder of IN goes to the same subfolder of OUT.
    let folder_of = |file: &Path| -> PathBuf {
        let sub = file
            .parent()
            .and_then(|p| p.strip_prefix(input).ok())
            .unwrap_or(Path::new(""));
        out_dir.join(sub)
    };
    let mut seen: HashMap<PathBuf, PathBuf> = HashMap::new();
    let jobs = found
        .take
        .into_iter()
        .map(|input| {
            let latent = single_out.clone().unwrap_or_else(|| {
                folder_of(&input).join(format!("{}.nii.gz", output_stem(&input)))
            });
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
        skipped: found.other_kind,
        ours: found.ours,
        out_dir,
        named_output,
    })
}
