//! Existing outputs of `infer` and `decode` against the run that would write them again
//! (`--skip-existing`): an output counts as done only when its NIfTI description is exactly
//! this run's (see `medvae_model::infer::provenance`).

use anyhow::{bail, Result};
use medvae_model::infer::Provenance;
use medvae_runtime::data::volume3d::read_nifti_descrip;
use std::path::Path;

/// An existing output's standing for `--skip-existing`.
pub enum Existing {
    /// Written by a run like this one.
    Ours,
    /// Absent, or not a readable NIfTI header: (re)made.
    Missing,
    /// Written by other weights or options (or by another program): the reason.
    Foreign(String),
}

pub fn existing(path: &Path, want: &str) -> Existing {
    if !path.is_file() {
        return Existing::Missing;
    }
    let Ok(found) = read_nifti_descrip(path) else {
        return Existing::Missing;
    };
    if found == want {
        return Existing::Ours;
    }
    match (Provenance::parse(&found), Provenance::parse(want)) {
        (Some(theirs), Some(ours)) => Existing::Foreign(theirs.difference(&ours)),
        _ if found.is_empty() => Existing::Foreign(
            "no description: written by another program, or by medvae-fast before outputs \
             recorded their weights"
                .to_string(),
        ),
        _ => Existing::Foreign(format!(
            "not written by medvae-fast (description {found:?})"
        )),
    }
}

/// Stop a `--skip-existing` run before it writes anything when outputs in `out_dir` were made
/// by other weights or options (`foreign`: `path: why` lines): keeping them would leave an
/// archive of mixed latents.
pub fn refuse_foreign(foreign: &[String], out_dir: &Path) -> Result<()> {
    if foreign.is_empty() {
        return Ok(());
    }
    let shown = foreign.len().min(5);
    bail!(
        "--skip-existing: {} existing output(s) in {} were not made by these weights and \
         options, so they cannot be kept as done:\n  {}{}\nWrite to another folder, \
         delete them, or leave out --skip-existing to rewrite every output.",
        foreign.len(),
        out_dir.display(),
        foreign[..shown].join("\n  "),
        if foreign.len() > shown {
            format!("\n  ... and {} more", foreign.len() - shown)
        } else {
            String::new()
        }
    );
}
