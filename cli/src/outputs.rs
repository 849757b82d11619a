//! Existing outputs of `infer` and `decode` against the run that would write them again
//! (`--skip-existing`): an output counts as done only when its NIfTI description is exactly
//! this run's (see `medvae_model::infer::provenance`).

use anyhow::{bail, Result};
use medvae_model::infer::{Job, Plan, Provenance};
use medvae_runtime::data::volume3d::read_nifti_descrip;
use std::path::{Path, PathBuf};

/// An existing output's standing for `--skip-existing`.
enum Existing {
    /// Written by a run like this one.
    Ours,
    /// Absent, or not a readable NIfTI header: (re)made.
    Missing,
    /// Written by other weights or options (or by another program): the reason.
    Foreign(String),
}

/// The standing of the output `path` for a run that would describe it as `want`.
fn existing(path: &Path, want: &str) -> Existing {
    // An absent file is unreadable too.
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

/// `--skip-existing`: drop the jobs of `plan` whose outputs all exist as this run would write
/// them, and return how many (`done`: what the count says, e.g. "file(s) already have their
/// outputs"). `outputs(job)` names a job's output paths with the description this run gives
/// each, or `None` for a job left to the run, which reports its problem itself. Outputs made
/// by other weights or options stop the run before it writes anything: keeping them would
/// leave an archive of mixed latents.
pub fn skip_done(
    plan: &mut Plan,
    done: &str,
    outputs: impl Fn(&Job) -> Option<Vec<(PathBuf, String)>>,
) -> Result<usize> {
    let before = plan.jobs.len();
    let mut foreign = Vec::new();
    plan.jobs.retain(|job| {
        let Some(outputs) = outputs(job) else {
            return true;
        };
        let mut all_ours = true;
        for (path, want) in outputs {
            match existing(&path, &want) {
                Existing::Ours => {}
                Existing::Missing => all_ours = false,
                Existing::Foreign(why) => {
                    foreign.push(format!("{}: {why}", path.display()));
                    all_ours = false;
                }
            }
        }
        !all_ours
    });
    if !foreign.is_empty() {
        let shown = foreign.len().min(5);
        bail!(
            "--skip-existing: {} existing output(s) in {} were not made by these weights and \
             options, so they cannot be kept as done:\n  {}{}\nWrite to another folder, \
             delete them, or leave out --skip-existing to rewrite every output.",
            foreign.len(),
            plan.out_dir.display(),
            foreign[..shown].join("\n  "),
            if foreign.len() > shown {
                format!("\n  ... and {} more", foreign.len() - shown)
            } else {
                String::new()
            }
        );
    }
    let skipped = before - plan.jobs.len();
    if skipped > 0 {
        eprintln!(
            "--skip-existing: {skipped} of {before} {done} in {}",
            plan.out_dir.display()
        );
    }
    Ok(skipped)
}
