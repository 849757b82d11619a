//! `data prepare`: datasets from a YAML config (or one from `--csv`), decoded on `--workers`
//! threads into shards, with a progress bar on stderr and a summary on stdout.

use super::config::DataConfig;
use super::error_line;
use anyhow::{anyhow, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use medvae_runtime::data::dataset::{
    prepare, DataKind, DatasetSpec, PrepareOptions, PrepareReport, Progress, REPORT_FILE,
};
use medvae_runtime::data::shard::ShardDtype;
use std::path::PathBuf;
use std::process::ExitCode;

/// How many skipped files the summary lists (all of them are in the report file).
const SKIPS_LISTED: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    F16,
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// PNG images (the reference `load_2d_finetune`).
    Png2d,
    /// NIfTI MRI volumes (RAS, min-max).
    Mri3d,
    /// NIfTI CT volumes (RAS, HU window [-1000, 1000]).
    Ct3d,
}

impl From<KindArg> for DataKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Png2d => DataKind::Png2d,
            KindArg::Mri3d => DataKind::Mri3d,
            KindArg::Ct3d => DataKind::Ct3d,
        }
    }
}

/// `medvae-fast data prepare`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "csv"])))]
pub struct PrepareArgs {
    /// YAML config with a `datasets:` list (see docs/DATA.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One dataset's CSV, in place of --config (needs --data-dir).
    #[arg(long, value_name = "FILE", requires = "data_dir")]
    pub csv: Option<PathBuf>,
    /// With --csv: the folder image ids are relative to.
    #[arg(long, value_name = "DIR", requires = "csv")]
    pub data_dir: Option<PathBuf>,
    /// With --csv: appended to each image id (e.g. `.png`).
    #[arg(long, default_value = "", requires = "csv")]
    pub suffix: String,
    /// With --csv: how to decode the files.
    #[arg(long, value_enum, default_value = "png2d", requires = "csv")]
    pub kind: KindArg,
    /// With --csv: the column holding image ids.
    #[arg(long, default_value = "image_uuid", requires = "csv")]
    pub image_column: String,
    /// With --csv: the column holding the split.
    #[arg(long, default_value = "split", requires = "csv")]
    pub split_column: String,
    /// Output folder (created; the indexes of an earlier run there are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Decode threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Skip bad files (counted and listed in the report) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Sample element type in the shards.
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: DtypeArg,
}

impl PrepareArgs {
    /// Prepare the datasets of a config file into `out` with the defaults (f16, all cores).
    pub fn from_config(config: &std::path::Path, out: &std::path::Path) -> PrepareArgs {
        PrepareArgs {
            config: Some(config.to_path_buf()),
            csv: None,
            data_dir: None,
            suffix: String::new(),
            kind: KindArg::Png2d,
            image_column: "image_uuid".into(),
            split_column: "split".into(),
            out: out.to_path_buf(),
            workers: 0,
            skip_bad: false,
            dtype: DtypeArg::F16,
        }
    }

    pub(crate) fn datasets(&self) -> Result<Vec<DatasetSpec>> {
        if let Some(path) = &self.config {
            return Ok(DataConfig::load(path)?.datasets);
        }
        let csv = self
            .csv
            .clone()
            .context("give --config FILE or --csv FILE")?;
        let data_dir = self
            .data_dir
            .clone()
            .context("--csv needs --data-dir DIR")?;
        let mut spec = DatasetSpec::new(csv, data_dir, self.kind.into());
        spec.suffix = self.suffix.clone();
        spec.image_column = self.image_column.clone();
        spec.split_column = self.split_column.clone();
        Ok(vec![spec])
    }

    fn options(&self) -> PrepareOptions {
        let mut opts = PrepareOptions::new(&self.out);
        opts.workers = self.workers;
        opts.skip_bad = self.skip_bad;
        opts.dtype = match self.dtype {
            DtypeArg::F16 => ShardDtype::F16,
            DtypeArg::F32 => ShardDtype::F32,
        };
        opts
    }
}

fn progress_bar() -> ProgressBar {
    // Hidden when stderr is not a terminal (logs, CI, tests): only the summary is printed then.
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files ({per_sec}, ETA {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub fn run(args: &PrepareArgs) -> Result<ExitCode> {
    let specs = args.datasets()?;
    let sources = super::fingerprint::of_sources(&specs)?;
    let opts = args.options();
    let bar = progress_bar();
    let mut on_file = |p: &Progress<'_>| {
        if bar.length() != Some(p.total as u64) {
            bar.set_length(p.total as u64);
        }
        if let Some(reason) = p.skipped {
            bar.suspend(|| eprintln!("skipped: {reason}"));
        }
        bar.set_position(p.done as u64);
    };
    let result = prepare(&specs, &opts, &mut on_file);
    bar.finish_and_clear();
    let report = result.map_err(|e| {
        anyhow!(
            "data prepare into {} failed: {}",
            opts.out_dir.display(),
            error_line(&e)
        )
    })?;
    print_summary(&report);
    super::fingerprint::store(&opts.out_dir, &sources)?;
    Ok(ExitCode::SUCCESS)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_summary(r: &PrepareReport) {
    let dtype = match r.dtype {
        ShardDtype::F16 => "f16",
        ShardDtype::F32 => "f32",
    };
    let rate = if r.seconds > 0.0 {
        r.files as f64 / r.seconds
    } else {
        0.0
    };
    println!(
        "prepared {} of {} files into {} ({dtype}) in {:.2} s ({rate:.1} files/s)",
        r.written,
        r.files,
        r.out_dir.display(),
        r.seconds
    );
    for (split, s) in &r.splits {
        println!(
            "  {:<5} {:>7} samples  {:>3} shard(s)  {:>10.2} MiB",
            split.name(),
            s.samples,
            s.shards,
            mib(s.bytes)
        );
    }
    if r.skipped.is_empty() {
        println!("skipped 0 files");
    } else {
        println!("skipped {} files:", r.skipped.len());
        for s in r.skipped.iter().take(SKIPS_LISTED) {
            println!("  [{} line {}] {}", s.split, s.line, s.reason);
        }
        if r.skipped.len() > SKIPS_LISTED {
            println!("  … {} more in the report", r.skipped.len() - SKIPS_LISTED);
        }
    }
    println!("report: {}", r.out_dir.join(REPORT_FILE).display());
}
