//! `data inspect DIR`: per split, the sample count, shards, dtype, shapes and value statistics
//! of a prepared folder, and optionally a PNG contact sheet of the first samples.

use super::contact_sheet::{render, SheetSample};
use anyhow::{bail, Context, Result};
use medvae_runtime::data::dataset::{PrepareReport, Split, REPORT_FILE};
use medvae_runtime::data::shard::{index_path, ShardDtype, ShardSet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Samples drawn on the contact sheet when --max is not given.
const DEFAULT_SHEET_SAMPLES: usize = 16;
/// Edge of one contact-sheet tile in pixels.
const TILE: u32 = 128;
/// Distinct shapes listed per split.
const SHAPES_LISTED: usize = 8;

/// `medvae-fast data inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// A folder written by `data prepare`.
    pub dir: PathBuf,
    /// Only this split (train, val or test); default: every split with an index.
    #[arg(long)]
    pub split: Option<String>,
    /// Write a PNG grid of samples (values [-1, 1] as 0..255; 3D: the middle slice of each axis).
    #[arg(long, value_name = "OUT.png")]
    pub contact_sheet: Option<PathBuf>,
    /// Read at most N samples per split for statistics and the sheet (default: all for
    /// statistics, 16 for the sheet).
    #[arg(long, value_name = "N")]
    pub max: Option<usize>,
    /// Also verify every sample's checksum.
    #[arg(long)]
    pub verify: bool,
}

/// Value statistics over many samples (f64 accumulation).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueStats {
    pub count: u64,
    pub nan: u64,
    pub inf: u64,
    pub min: f64,
    pub max: f64,
    sum: f64,
    sum_sq: f64,
}

impl Default for ValueStats {
    fn default() -> Self {
        ValueStats {
            count: 0,
            nan: 0,
            inf: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }
}

impl ValueStats {
    /// Add values; NaN and ±Inf are counted apart and left out of min/max/mean/std.
    pub fn add(&mut self, values: &[f32]) {
        for &v in values {
            if v.is_nan() {
                self.nan += 1;
            } else if v.is_infinite() {
                self.inf += 1;
            } else {
                let v = f64::from(v);
                self.count += 1;
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.sum += v;
                self.sum_sq += v * v;
            }
        }
    }
    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        let m = self.mean();
        (self.sum_sq / self.count.max(1) as f64 - m * m)
            .max(0.0)
            .sqrt()
    }
}

fn splits_to_inspect(args: &InspectArgs) -> Result<Vec<Split>> {
    if let Some(name) = &args.split {
        let split = Split::parse(name)
            .with_context(|| format!("--split {name:?}: expected train, val or test"))?;
        if !index_path(&args.dir, split.name()).is_file() {
            bail!(
                "{}: no {} split (missing {})",
                args.dir.display(),
                split.name(),
                index_path(&args.dir, split.name()).display()
            );
        }
        return Ok(vec![split]);
    }
    let present: Vec<Split> = Split::ALL
        .into_iter()
        .filter(|s| index_path(&args.dir, s.name()).is_file())
        .collect();
    if present.is_empty() {
        bail!(
            "{}: not a prepared dataset folder (no train/val/test .index.json)",
            args.dir.display()
        );
    }
    Ok(present)
}

fn dtype_name(d: ShardDtype) -> &'static str {
    match d {
        ShardDtype::F16 => "f16",
        ShardDtype::F32 => "f32",
    }
}

/// Print one split; returns the samples kept for the contact sheet.
fn inspect_split(
    dir: &Path,
    split: Split,
    args: &InspectArgs,
    sheet_samples: usize,
) -> Result<Vec<SheetSample>> {
    let set = ShardSet::open(dir, split.name())
        .with_context(|| format!("cannot open the {} split of {}", split, dir.display()))?;
    let index = set.index();
    let bytes: u64 = index.shards.iter().map(|s| s.bytes).sum();
    println!(
        "{}: {} samples in {} shard(s), {}, {:.2} MiB",
        split,
        set.len(),
        index.shards.len(),
        dtype_name(set.dtype()),
        bytes as f64 / (1024.0 * 1024.0)
    );
    if set.is_empty() {
        return Ok(Vec::new());
    }
    if args.verify {
        set.verify()
            .with_context(|| format!("{} split of {}", split, dir.display()))?;
        println!("  checksums: ok");
    }

    let mut shapes: BTreeMap<&[usize], usize> = BTreeMap::new();
    let mut datasets: BTreeMap<usize, usize> = BTreeMap::new();
    for s in &index.samples {
        *shapes.entry(s.shape.as_slice()).or_default() += 1;
        *datasets.entry(s.dataset).or_default() += 1;
    }
    let mut by_count: Vec<(&[usize], usize)> = shapes.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let listed: Vec<String> = by_count
        .iter()
        .take(SHAPES_LISTED)
        .map(|(shape, n)| format!("{n} × {shape:?}"))
        .collect();
    let more = by_count.len().saturating_sub(SHAPES_LISTED);
    let more = if more > 0 {
        format!(" (+{more} more shapes)")
    } else {
        String::new()
    };
    println!("  shapes: {}{more}", listed.join(", "));
    let per_dataset: Vec<String> = datasets
        .iter()
        .map(|(d, n)| format!("dataset {d}: {n}"))
        .collect();
    println!("  {}", per_dataset.join(", "));

    let limit = args.max.unwrap_or(usize::MAX).min(set.len());
    let mut stats = ValueStats::default();
    let mut kept = Vec::new();
    let mut buf = Vec::new();
    for i in 0..limit {
        let view = set
            .sample(i)
            .with_context(|| format!("sample {i} of the {} split", split))?;
        buf.resize(view.values.len(), 0.0);
        view.values.copy_to_f32(&mut buf);
        stats.add(&buf);
        if kept.len() < sheet_samples {
            kept.push(SheetSample {
                shape: view.shape.to_vec(),
                values: buf.clone(),
            });
        }
    }
    let over = if limit < set.len() {
        format!(" (first {limit} samples)")
    } else {
        String::new()
    };
    if stats.count == 0 {
        println!(
            "  values{over}: no finite values (NaN {}, Inf {})",
            stats.nan, stats.inf
        );
    } else {
        println!(
            "  values{over}: min {:.4}  max {:.4}  mean {:.4}  std {:.4}  NaN {}  Inf {}",
            stats.min,
            stats.max,
            stats.mean(),
            stats.std(),
            stats.nan,
            stats.inf
        );
    }
    Ok(kept)
}

fn print_report(dir: &Path) {
    let path = dir.join(REPORT_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    match serde_json::from_str::<PrepareReport>(&text) {
        Ok(r) => println!(
            "{}: {} files listed, {} written, {} skipped",
            path.display(),
            r.files,
            r.written,
            r.skipped.len()
        ),
        Err(e) => println!("{}: unreadable report ({e})", path.display()),
    }
}

pub fn run(args: &InspectArgs) -> Result<ExitCode> {
    let splits = splits_to_inspect(args)?;
    print_report(&args.dir);
    let sheet_samples = match (&args.contact_sheet, args.max) {
        (None, _) => 0,
        (Some(_), Some(n)) => n,
        (Some(_), None) => DEFAULT_SHEET_SAMPLES,
    };
    let mut sheet: Option<(Split, Vec<SheetSample>)> = None;
    for split in splits {
        let kept = inspect_split(&args.dir, split, args, sheet_samples)?;
        if sheet.is_none() && !kept.is_empty() {
            sheet = Some((split, kept));
        }
    }
    if let Some(out) = &args.contact_sheet {
        let Some((split, samples)) = sheet else {
            bail!("no samples to draw on a contact sheet");
        };
        let image = render(&samples, TILE)?;
        image
            .save(out)
            .with_context(|| format!("cannot write contact sheet {}", out.display()))?;
        println!(
            "contact sheet: {} ({} {} samples, {}x{} px)",
            out.display(),
            samples.len(),
            split,
            image.width(),
            image.height()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::ValueStats;

    #[test]
    fn stats_match_a_hand_computation() {
        let mut s = ValueStats::default();
        s.add(&[1.0, -1.0, f32::NAN]);
        s.add(&[0.5, f32::INFINITY, 0.5]);
        assert_eq!((s.count, s.nan, s.inf), (4, 1, 1));
        assert_eq!((s.min, s.max), (-1.0, 1.0));
        assert!((s.mean() - 0.25).abs() < 1e-12);
        // values 1, -1, .5, .5: mean .25, E[x²] = 2.5/4 = .625, var = .625 - .0625 = .5625
        assert!((s.std() - 0.75).abs() < 1e-12);
    }
}
