//! Which files a run takes from `-i`: a file, or a folder's files (directly inside it, or
//! with `recursive` in every subfolder too, depth first in name order, without hidden
//! folders, the output folder, or a second visit of a folder reached through a link; never
//! macOS's `._name` metadata files).
//!
//! Files are told apart by name (`.png` for 2D models, `.nii`/`.nii.gz` for 3D ones) and,
//! for NIfTI files, by what medvae-fast wrote into their description: a latent or a
//! reconstruction it made is not a scan. `infer` and `eval` read scans, so they leave such
//! files out (a folder of scans often holds an earlier run's outputs); `decode` reads them.

use super::error::InferError;
use super::provenance::{OutputKind, Provenance};
use super::run::{input_kind, InputKind};
use medvae_runtime::data::volume3d::read_nifti_descrip;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Select {
    pub reads: InputKind,
    /// A folder's subfolders too.
    pub recursive: bool,
    /// Leave out the latents and reconstructions medvae-fast wrote (`infer`, `eval`).
    pub scans_only: bool,
}

impl Select {
    /// Images or volumes, for `infer` and `eval`.
    pub fn scans(reads: InputKind, recursive: bool) -> Select {
        Select {
            reads,
            recursive,
            scans_only: true,
        }
    }

    /// Latent files, for `decode`.
    pub fn latents(recursive: bool) -> Select {
        Select {
            reads: InputKind::Nifti,
            recursive,
            scans_only: false,
        }
    }
}

/// The files found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// What the run reads, in order.
    pub take: Vec<PathBuf>,
    /// Files only a model of the other dimensionality reads.
    pub other_kind: Vec<PathBuf>,
    /// Outputs of medvae-fast left out (`scans_only`), with what each holds.
    pub ours: Vec<(PathBuf, OutputKind)>,
}

/// What medvae-fast recorded as the content of the NIfTI file `path`, if it wrote it.
pub fn written_by_us(path: &Path) -> Option<OutputKind> {
    if input_kind(path) != Some(InputKind::Nifti) {
        return None;
    }
    let descrip = read_nifti_descrip(path).ok()?;
    Provenance::parse(&descrip).map(|p| p.kind)
}

/// The files `input` gives a run that reads `select` (see the module docs); `exclude` is a
/// folder never listed (the output folder). An error when nothing is left to read.
pub fn list(input: &Path, select: Select, exclude: Option<&Path>) -> Result<Listing, InferError> {
    let meta = std::fs::metadata(input)
        .map_err(|e| InferError::Setup(format!("input {}: {e}", input.display())))?;
    if !meta.is_dir() {
        if let Some(kind) = select.scans_only.then(|| written_by_us(input)).flatten() {
            return Err(InferError::Input {
                path: input.to_path_buf(),
                msg: format!(
                    "written by medvae-fast (it holds `{}`), not a scan; `medvae-fast decode` \
                     turns z latents back into images",
                    kind.word()
                ),
            });
        }
        return Ok(Listing {
            take: vec![input.to_path_buf()],
            ..Listing::default()
        });
    }
    let mut walk = Walk {
        recursive: select.recursive,
        exclude: exclude.and_then(|p| std::fs::canonicalize(p).ok()),
        visited: HashSet::new(),
    };
    if let Ok(root) = std::fs::canonicalize(input) {
        walk.visited.insert(root);
    }
    let mut files = Vec::new();
    walk.list(input, &mut files)?;
    let mut found = Listing::default();
    for p in files {
        let Some(kind) = input_kind(&p) else {
            continue;
        };
        // Outputs are told apart by their header only where it matters: among the files a
        // scan reader takes, and among other-kind files (which a run must not write over,
        // unless they are its own earlier outputs).
        let ours = if kind != select.reads || select.scans_only {
            written_by_us(&p)
        } else {
            None
        };
        match ours {
            Some(what) => found.ours.push((p, what)),
            None if kind == select.reads => found.take.push(p),
            None => found.other_kind.push(p),
        }
    }
    if found.take.is_empty() {
        let what = match select.reads {
            InputKind::Png => ".png images (this is a 2D model)",
            InputKind::Nifti if select.scans_only => ".nii / .nii.gz scans (this is a 3D model)",
            InputKind::Nifti => ".nii / .nii.gz files",
        };
        let where_ = if select.recursive {
            " or its subfolders"
        } else {
            ""
        };
        let outputs = match found.ours.len() {
            0 => String::new(),
            n => format!(" ({n} file(s) there are medvae-fast outputs, not scans)"),
        };
        return Err(InferError::Setup(format!(
            "{}{where_} holds no {what}{outputs}",
            input.display()
        )));
    }
    Ok(found)
}

/// A folder listing, recursive or not.
struct Walk {
    recursive: bool,
    /// The output folder (resolved), never read as input.
    exclude: Option<PathBuf>,
    /// Folders already listed (resolved): a symbolic link back up the tree is not followed
    /// around forever.
    visited: HashSet<PathBuf>,
}

impl Walk {
    fn list(&mut self, dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), InferError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| InferError::Setup(format!("cannot list {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_file() {
                if !is_apple_double(&p) {
                    files.push(p);
                }
            } else if self.recursive && p.is_dir() && !is_hidden(&p) {
                let Ok(resolved) = std::fs::canonicalize(&p) else {
                    continue;
                };
                if self.exclude.as_ref() != Some(&resolved) && self.visited.insert(resolved) {
                    self.list(&p, files)?;
                }
            }
        }
        Ok(())
    }
}

/// `._scan.nii.gz`: the metadata file macOS writes beside each file on drives without its
/// own file system (exFAT, network shares). Its name ends like an image; it never is one.
fn is_apple_double(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("._"))
}

/// `.git`, `.snapshot` and the like: never data.
fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}
