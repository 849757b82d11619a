//! `medvae-fast eval`: how well a model reconstructs a set of images or volumes: PSNR, SSIM,
//! MS-SSIM, L1 and MSE per sample and over all (`medvae_model::quality`). With `--baseline`
//! a second model (say, the published weights before finetuning) runs on the same samples and
//! the report adds the paired differences. The samples are either files (preprocessed as
//! `infer` does) or a split of a prepared folder (as finetuning saw them).

mod report;
mod source;

use crate::cmd_infer::{check_device, progress_bar, report_skipped, ModalityArg};
use crate::interrupt;
use crate::model_args::{ModelArgs, WindowArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use medvae_model::infer::{
    fingerprints, list, load_model, pipelined, settings, Fingerprints, InferOptions, Inferencer,
    LoadedModel, Modality, ModelRequest, Prepared, Select,
};
use medvae_model::losses::Lpips;
use medvae_model::quality::{measure, paired, Perceptual, Quality, Summary};
use medvae_runtime::checkpoint::write_atomically;
use medvae_runtime::data::shard::ShardSet;
use report::{csv_text, paired_table, sample_line, summary_table, Row};
use source::Source;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Images (.png, 2D models) or volumes (.nii/.nii.gz, 3D models): a file or a folder, read
    /// and preprocessed as `infer` does (native size; volumes foreground-cropped).
    #[arg(
        short = 'i',
        long = "input",
        conflicts_with = "prepared",
        required_unless_present = "prepared"
    )]
    input: Option<PathBuf>,
    /// With a folder input: also read its subfolders (not hidden ones).
    #[arg(short = 'r', long, requires = "input")]
    recursive: bool,
    /// Or a folder written by `data prepare` (a finetune config's `dataloader.prepared_dir`):
    /// the samples of `--split` as finetuning reads them (2D resized to the config's size).
    #[arg(long)]
    prepared: Option<PathBuf>,
    /// The split of `--prepared` to evaluate: train, val or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// With `-i` and a 3D model: the intensity rule (CT window or MRI min-max). 2D: ignored.
    #[arg(long, value_enum)]
    modality: Option<ModalityArg>,
    /// Also evaluate these weights (e.g. the published checkpoint) on the same samples, and
    /// report the per-sample differences (model − baseline) and how many samples each wins.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Also measure LPIPS: torchvision's VGG16 checkpoint (`vgg16-397923af.pth`), with
    /// --lpips-lin. Volumes: the mean over every slice along the three axes.
    #[arg(long, requires = "lpips_lin")]
    lpips_vgg: Option<PathBuf>,
    /// LPIPS' linear heads (the `lpips` package's `weights/v0.1/vgg.pth`), with --lpips-vgg.
    #[arg(long, requires = "lpips_vgg")]
    lpips_lin: Option<PathBuf>,
    /// Write one CSV row per sample (name, shape, l1, mse, psnr_db, ssim, ms_ssim, lpips; with
    /// --baseline the same again prefixed `baseline_`).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the summary, the weights' fingerprints and the settings as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Evaluate at most this many samples (0 = all), in order.
    #[arg(long, default_value_t = 0)]
    max: usize,
    /// cpu or cuda[:N]: where the model (and LPIPS) runs; the other metrics are computed on
    /// the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    net: ModelArgs,
    #[command(flatten)]
    window: WindowArgs,
}

/// A sample's input channels-first: what each model's reconstruction is measured against.
struct Target {
    values: Vec<f32>,
    channels: usize,
    spatial: Vec<usize>,
}

/// A model's reconstruction of a sample, and its LPIPS when asked for.
struct Reconstruction {
    decoded: Vec<f32>,
    lpips: Option<f64>,
    /// 3D sliding windows run (1 for 2D).
    windows: usize,
}

impl Reconstruction {
    /// The metrics against `target` (on the CPU, in f64; LPIPS was measured on the device).
    fn quality(&self, target: &Target, path: &Path) -> Result<Quality> {
        let mut quality = measure(
            &self.decoded,
            &target.values,
            target.channels,
            &target.spatial,
        )
        .with_context(|| format!("{}", path.display()))?;
        quality.lpips = self.lpips;
        Ok(quality)
    }
}

/// A sample through the model (and the baseline): what the metrics stage reads.
struct Reconstructed {
    path: PathBuf,
    target: Target,
    ours: Reconstruction,
    theirs: Option<Reconstruction>,
}

/// A model under evaluation.
struct Evaluated {
    inferencer: Inferencer,
    weights: String,
    prints: Fingerprints,
}

impl Evaluated {
    fn new(loaded: LoadedModel, opts: InferOptions) -> Result<Evaluated> {
        let mut model = loaded.model;
        let prints = fingerprints(&mut model);
        Ok(Evaluated {
            inferencer: Inferencer::new(model, opts)?,
            weights: loaded.weights,
            prints,
        })
    }

    /// Reconstruct `input`, and its LPIPS against `target` (the same input channels-first)
    /// when `perceptual` is given: what runs on the model's device.
    fn reconstruct(
        &mut self,
        input: &Prepared,
        target: &Target,
        path: &Path,
        perceptual: Option<&Perceptual>,
    ) -> Result<Reconstruction> {
        let out = self.inferencer.infer_prepared(input, path)?;
        let decoded = out
            .decoded
            .context("the model returned no reconstruction")?
            .data;
        let lpips = match perceptual {
            Some(p) => p
                .distance(&decoded, &target.values, target.channels, &target.spatial)
                .with_context(|| format!("LPIPS of {}", path.display()))?,
            None => None,
        };
        Ok(Reconstruction {
            decoded,
            lpips,
            windows: out.windows,
        })
    }

    fn json(&self, summary: &Summary) -> serde_json::Value {
        serde_json::json!({
            "weights": self.weights,
            "fingerprints": {
                "encoder": format!("{:012x}", self.prints.encoder),
                "weights": format!("{:012x}", self.prints.weights),
            },
            "summary": summary,
        })
    }
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let device = check_device(args.device.trim(), &args.net.precision)?;
    let loaded = args.net.load()?;
    let cfg = loaded.model.config.clone();
    let name = loaded.name.clone();
    let modality = match (args.modality, cfg.dims) {
        (Some(ModalityArg::Ct), _) => Modality::Ct,
        (Some(ModalityArg::Mri), _) => Modality::Mri,
        (_, 2) => Modality::Xray,
        (Some(ModalityArg::Xray), _) => bail!("--modality xray: a 3D model reads CT or MRI"),
        // A prepared volume is normalised already: the rule is not applied again.
        (None, _) if args.prepared.is_some() => Modality::Mri,
        (None, _) => {
            bail!("--modality ct|mri is needed to read volumes (it picks the intensity rule)")
        }
    };
    let opts = InferOptions {
        modality,
        decode: true,
        roi_size: args.window.roi_size,
        overlap: args.window.overlap,
        device,
        latent_z: true,
    };
    let mut model = Evaluated::new(loaded, opts)?;
    let mut baseline = match &args.baseline {
        Some(path) => {
            let other = load_model(&ModelRequest {
                weights: Some(path.clone()),
                ..ModelRequest::default()
            })
            .with_context(|| format!("--baseline {}", path.display()))?;
            let bc = &other.model.config;
            if (bc.dims, bc.in_channels) != (cfg.dims, cfg.in_channels) {
                bail!(
                    "--baseline {}: a {}D model of {} input channel(s); the model evaluated is \
                     {}D with {}: they cannot read the same samples",
                    path.display(),
                    bc.dims,
                    bc.in_channels,
                    cfg.dims,
                    cfg.in_channels
                );
            }
            Some(Evaluated::new(other, opts)?)
        }
        None => None,
    };
    let perceptual = match (&args.lpips_vgg, &args.lpips_lin) {
        (Some(vgg), Some(lin)) => Some(Perceptual::new(Lpips::pretrained(vgg, lin)?, device)?),
        _ => None,
    };
    let source = open_source(&args, &model.inferencer, cfg.dims)?;
    let total = match args.max {
        0 => source.len(),
        n => n.min(source.len()),
    };
    if total == 0 {
        bail!("no samples to evaluate");
    }
    eprintln!(
        "eval: {} sample(s), model {} ({}D, {}x downsampling), weights {}{}",
        total,
        name.as_deref().unwrap_or("from checkpoint"),
        cfg.dims,
        cfg.downsample_factor(),
        model.weights,
        baseline
            .as_ref()
            .map_or(String::new(), |b| format!(", baseline {}", b.weights)),
    );

    let t0 = Instant::now();
    let bar = progress_bar(total);
    let mut rows = Vec::with_capacity(total);
    let mut failed = Vec::new();
    interrupt::install();
    // The next sample is read and the last one's metrics computed (f64 SSIM, MS-SSIM on the
    // CPU) while the model reconstructs (see `pipelined`).
    let preparer = model.inferencer.preparer();
    let mut next = 0..total;
    let stages = pipelined(
        || next.next(),
        |&i| -> Result<(Prepared, PathBuf, Target)> {
            let (input, path) = source.load(i, &preparer)?;
            let (values, channels, spatial) = input.channels_first()?;
            let target = Target {
                values,
                channels,
                spatial,
            };
            Ok((input, path, target))
        },
        |&i, (input, path, target)| {
            bar.set_message(source.name(i));
            let lp = perceptual.as_ref();
            let ours = model.reconstruct(&input, &target, &path, lp)?;
            let theirs = match baseline.as_mut() {
                Some(b) => Some(b.reconstruct(&input, &target, &path, lp)?),
                None => None,
            };
            Ok(Reconstructed {
                path,
                target,
                ours,
                theirs,
            })
        },
        |i, result: Result<Reconstructed>| {
            let sample = source.name(i);
            let row = result.and_then(|r| {
                let quality = r.ours.quality(&r.target, &r.path)?;
                let baseline = match &r.theirs {
                    Some(t) => Some(t.quality(&r.target, &r.path)?),
                    None => None,
                };
                let mut shape = vec![r.target.channels];
                shape.extend(&r.target.spatial);
                Ok(Row {
                    name: sample.clone(),
                    shape,
                    quality,
                    baseline,
                    windows: r.ours.windows,
                })
            });
            match row {
                Ok(row) => {
                    bar.suspend(|| println!("ok {}", sample_line(&row)));
                    rows.push(row);
                }
                Err(e) => {
                    bar.suspend(|| eprintln!("FAILED {sample}: {e:#}"));
                    failed.push(sample);
                }
            }
            bar.inc(1);
        },
        || interrupt::requested().is_none(),
    );
    bar.finish_and_clear();
    eprintln!("time in each stage: {}", stages.line("metrics"));
    crate::profiles::print();
    let ours: Vec<Quality> = rows.iter().map(|r| r.quality).collect();
    let theirs: Vec<Quality> = rows.iter().filter_map(|r| r.baseline).collect();
    let summary = Summary::of(&ours);
    let compared = baseline
        .as_ref()
        .map(|_| (Summary::of(&theirs), paired(&ours, &theirs)));
    let stopped = interrupt::requested();
    let precision = args.net.precision_on(&[device]);
    // A prepared split was normalised by `data prepare`, by each dataset's own rule.
    let rule = match (args.prepared.is_some(), modality) {
        (true, _) => "prepared",
        (false, Modality::Ct) => "ct",
        (false, _) => "mri",
    };
    let run_settings = settings(
        cfg.dims,
        rule,
        args.window.roi_size,
        args.window.overlap,
        precision,
    );

    if let Some(path) = &args.csv {
        write_atomically(path, csv_text(&rows).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        // The model's weights, fingerprints and summary, then what the run was.
        let mut report = model.json(&summary);
        report["model"] = serde_json::json!(name);
        report["source"] = match (&args.input, &args.prepared) {
            (Some(i), _) => serde_json::json!({ "input": i }),
            (_, Some(p)) => serde_json::json!({ "prepared": p, "split": args.split }),
            _ => serde_json::Value::Null,
        };
        report["settings"] = serde_json::json!(run_settings);
        report["complete"] = serde_json::json!(stopped.is_none() && rows.len() == total);
        report["failed"] = serde_json::json!(failed);
        if let (Some(b), Some((their_summary, pairs))) = (&baseline, &compared) {
            report["baseline"] = b.json(their_summary);
            report["paired"] = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        write_atomically(path, format!("{report:#}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }

    println!(
        "eval: {} of {total} sample(s) evaluated, {} failed, {:.1} s",
        rows.len(),
        failed.len(),
        t0.elapsed().as_secs_f64()
    );
    match &compared {
        None => print!("{}", summary_table(&summary)),
        Some((their_summary, pairs)) => {
            println!("model ({}):", model.weights);
            print!("{}", summary_table(&summary));
            println!(
                "baseline ({}):",
                baseline.as_ref().map_or("", |b| &b.weights)
            );
            print!("{}", summary_table(their_summary));
            println!("model - baseline, per sample:");
            print!("{}", paired_table(pairs));
        }
    }
    if let Some(signal) = stopped {
        eprintln!(
            "stopped by {}: the summary covers the samples above",
            interrupt::name(signal)
        );
        return Ok(interrupt::exit_code(signal));
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("failed: {}", failed.join(", "));
        Ok(ExitCode::from(1))
    }
}

/// The samples `-i` or `--prepared` names, checked against the model's dimensionality.
fn open_source(args: &EvalArgs, inferencer: &Inferencer, dims: usize) -> Result<Source> {
    match (&args.input, &args.prepared) {
        (Some(input), _) => {
            let found = list(
                input,
                Select::scans(inferencer.reads(), args.recursive),
                None,
            )?;
            report_skipped(&found.other_kind, &found.ours, dims);
            Ok(Source::Files(found.take))
        }
        (None, Some(dir)) => {
            let set = ShardSet::open(dir, &args.split)
                .with_context(|| format!("--prepared {} --split {}", dir.display(), args.split))?;
            // 2D samples are [H, W, C], 3D ones [D, H, W, 1].
            let rank = dims + 1;
            if let Some(s) = set.index().samples.iter().find(|s| s.shape.len() != rank) {
                bail!(
                    "{}: its {} samples are {}D ({} has shape {:?}), the model is {dims}D",
                    dir.display(),
                    args.split,
                    s.shape.len().saturating_sub(1),
                    s.source,
                    s.shape,
                );
            }
            Ok(Source::Shards {
                set,
                dir: dir.clone(),
            })
        }
        (None, None) => bail!("give -i FILE|FOLDER or --prepared DIR"),
    }
}
