//! `medvae-fast data split DIR --kind KIND --csv FILE [--config FILE]`: the split CSV (and,
//! if asked, the data config) for a folder tree of images, split by patient folder. The split
//! itself is `medvae_runtime::data::dataset::split`.

use super::prepare::KindArg;
use anyhow::{bail, Context, Result};
use medvae_model::infer::{list, InputKind, Select};
use medvae_runtime::checkpoint::write_atomically;
use medvae_runtime::data::dataset::{assign_splits, split_csv, DataKind, Split, SplitPlan};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// The folder of images (read with its subfolders; hidden folders and medvae-fast's own
    /// outputs are left out).
    dir: PathBuf,
    /// What the files are: png2d (X-ray, mammography, slices), mri3d or ct3d (NIfTI volumes).
    #[arg(long, value_enum)]
    kind: KindArg,
    /// The CSV to write: image_uuid (path below DIR), split, group.
    #[arg(long)]
    csv: PathBuf,
    /// Also write a data config naming the CSV and DIR (what `dataloader.config=` and
    /// `data prepare --config` take).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Share of the files for validation.
    #[arg(long, default_value_t = 0.1)]
    val: f64,
    /// Share of the files for testing.
    #[arg(long, default_value_t = 0.1)]
    test: f64,
    /// Seed of the shuffle: the same seed gives the same split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folders of a file's path below DIR that name its group (a patient: `sub-01/...` with
    /// 1). A group is never split across train, val and test. 0: every file on its own.
    #[arg(long, default_value_t = 1)]
    group_depth: usize,
    /// Replace the CSV and config if they exist.
    #[arg(long)]
    force: bool,
}

pub fn run(args: &SplitArgs) -> Result<ExitCode> {
    for out in std::iter::once(&args.csv).chain(&args.config) {
        if out.exists() && !args.force {
            bail!(
                "{} exists; choose another name, or --force to replace it",
                out.display()
            );
        }
    }
    let kind = DataKind::from(args.kind);
    let reads = if kind.is_3d() {
        InputKind::Nifti
    } else {
        InputKind::Png
    };
    let found = list(&args.dir, Select::scans(reads, true), None)
        .with_context(|| format!("data split {}", args.dir.display()))?;
    let relative = found
        .take
        .iter()
        .map(|p| relative_id(&args.dir, p))
        .collect::<Result<Vec<String>>>()?;
    let plan = SplitPlan {
        val: args.val,
        test: args.test,
        seed: args.seed,
        depth: args.group_depth,
    };
    let (splits, groups) = assign_splits(&relative, plan).map_err(anyhow::Error::msg)?;
    let text = split_csv(&relative, &splits, args.group_depth).map_err(anyhow::Error::msg)?;
    write_atomically(&args.csv, &text)
        .with_context(|| format!("writing {}", args.csv.display()))?;

    let depth = args.group_depth;
    let summary: Vec<String> = Split::ALL
        .iter()
        .map(|&want| {
            let files = splits.iter().filter(|&&s| s == want).count();
            let in_split: HashSet<String> = relative
                .iter()
                .zip(&splits)
                .filter(|(_, &s)| s == want)
                .map(|(r, _)| medvae_runtime::data::dataset::group_of(r, depth))
                .collect();
            let n = in_split.len();
            format!(
                "{want} {files} ({n} group{})",
                if n == 1 { "" } else { "s" }
            )
        })
        .collect();
    println!(
        "data split: {} files in {groups} groups: {} -> {}",
        relative.len(),
        summary.join(", "),
        args.csv.display()
    );
    if !found.ours.is_empty() {
        eprintln!(
            "left out {} file(s) written by medvae-fast (latents, reconstructions)",
            found.ours.len()
        );
    }
    if let Some(config) = &args.config {
        let yaml = data_config(config, &args.csv, &args.dir, kind, args)?;
        write_atomically(config, yaml.as_bytes())
            .with_context(|| format!("writing {}", config.display()))?;
        println!(
            "data config -> {} (finetune with dataloader.config={0})",
            config.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `file` below `dir` as a `/`-separated id (what the CSV's `image_uuid` holds).
fn relative_id(dir: &Path, file: &Path) -> Result<String> {
    let below = file.strip_prefix(dir).unwrap_or(file);
    let parts = below
        .components()
        .map(|c| {
            c.as_os_str()
                .to_str()
                .with_context(|| format!("{}: the name is not UTF-8", file.display()))
        })
        .collect::<Result<Vec<&str>>>()?;
    Ok(parts.join("/"))
}

/// A data config naming `csv` and `dir` (relative to the config's folder when they are below
/// it, so that the three can move together).
fn data_config(
    config: &Path,
    csv: &Path,
    dir: &Path,
    kind: DataKind,
    args: &SplitArgs,
) -> Result<String> {
    let base = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base)
        .with_context(|| format!("the folder of {}", config.display()))?;
    let place = |p: &Path| -> Result<String> {
        let full =
            std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))?;
        let shown = full.strip_prefix(&base).unwrap_or(&full);
        let text = shown
            .to_str()
            .with_context(|| format!("{}: the path is not UTF-8", full.display()))?;
        // JSON strings are valid YAML scalars, quoting whatever needs it.
        Ok(serde_json::to_string(if text.is_empty() {
            "."
        } else {
            text
        })?)
    };
    // The name the data config's parser takes (DataKind's own serde name).
    let kind_name = serde_json::to_value(kind)?;
    let kind_name = kind_name.as_str().unwrap_or_default();
    Ok(format!(
        "# Written by `medvae-fast data split` (val {}, test {}, seed {}, groups: the first {} \
         folder(s) of each path).\ndatasets:\n  - csv: {}\n    data_dir: {}\n    kind: {kind_name}\n",
        args.val,
        args.test,
        args.seed,
        args.group_depth,
        place(csv)?,
        place(dir)?,
    ))
}
