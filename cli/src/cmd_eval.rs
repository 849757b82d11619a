//! `medvae-fast eval`: how well a model reconstructs a set of images or volumes: PSNR, SSIM,
//! MS-SSIM, L1 and MSE per sample and over all (`medvae_model::quality`), to compare a
//! finetuned model with the published one on held-out data. The samples are either files
//! (preprocessed as `infer` does) or a split of a prepared folder (as finetuning saw them).

use crate::cmd_infer::{check_device, describe, progress_bar, ModalityArg};
use crate::interrupt;
use crate::model_args::{ModelArgs, WindowArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use medvae_model::infer::{
    fingerprints, plan, settings, InferOptions, Inferencer, Modality, Prepared,
};
use medvae_model::quality::{measure, Quality, Stats, Summary};
use medvae_runtime::checkpoint::write_atomically;
use medvae_runtime::data::image2d::{Image2d, Samples};
use medvae_runtime::data::shard::ShardSet;
use medvae_runtime::data::volume3d::Volume;
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
    /// Write one CSV row per sample (name, shape, l1, mse, psnr_db, ssim, ms_ssim).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the summary, the weights' fingerprints and the settings as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Evaluate at most this many samples (0 = all), in order.
    #[arg(long, default_value_t = 0)]
    max: usize,
    /// cpu or cuda[:N]: where the model runs (the metrics are computed on the CPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    net: ModelArgs,
    #[command(flatten)]
    window: WindowArgs,
}

/// Where the samples come from.
enum Source {
    Files(Vec<PathBuf>),
    Shards { set: ShardSet, dir: PathBuf },
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Files(f) => f.len(),
            Source::Shards { set, .. } => set.len(),
        }
    }

    fn name(&self, i: usize) -> String {
        match self {
            Source::Files(f) => f[i].display().to_string(),
            Source::Shards { set, .. } => set.index().samples[i].source.clone(),
        }
    }

    /// Sample `i` preprocessed, with the path that names it in errors.
    fn load(&self, i: usize, inferencer: &Inferencer) -> Result<(Prepared, PathBuf)> {
        match self {
            Source::Files(f) => Ok((inferencer.prepare_file(&f[i])?, f[i].clone())),
            Source::Shards { set, dir } => {
                let view = set.sample(i)?;
                let mut data = vec![0.0; view.values.len()];
                view.values.copy_to_f32(&mut data);
                let at = dir.join(format!("{}#{i}", set.index().split));
                let prepared = match *view.shape {
                    [height, width, channels] => Prepared::Image(Image2d {
                        height,
                        width,
                        channels,
                        data,
                        samples: Samples::Float,
                    }),
                    [d0, d1, d2, 1] => Prepared::Volume(
                        Volume {
                            shape: [d0, d1, d2],
                            data,
                        },
                        None,
                    ),
                    ref other => bail!("{}: a sample of shape {other:?}", at.display()),
                };
                Ok((prepared, at))
            }
        }
    }
}

/// One evaluated sample.
struct Row {
    name: String,
    shape: Vec<usize>,
    quality: Quality,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let device = check_device(args.device.trim(), &args.net.precision)?;
    let loaded = args.net.load()?;
    let cfg = loaded.model.config.clone();
    let mut model = loaded.model;
    let prints = fingerprints(&mut model);
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
    let mut inferencer = Inferencer::new(
        model,
        InferOptions {
            modality,
            decode: true,
            roi_size: args.window.roi_size,
            overlap: args.window.overlap,
            device,
            latent_z: true,
        },
    )?;
    let source = match (&args.input, &args.prepared) {
        (Some(input), _) => {
            // `plan` lists the inputs; nothing is written, so any output folder will do.
            let listed = plan(input, Path::new("."), inferencer.reads(), false)?;
            for s in &listed.skipped {
                eprintln!(
                    "skipped: {} (a {}D model does not read it)",
                    s.display(),
                    cfg.dims
                );
            }
            Source::Files(listed.jobs.into_iter().map(|j| j.input).collect())
        }
        (None, Some(dir)) => {
            let set = ShardSet::open(dir, &args.split)
                .with_context(|| format!("--prepared {} --split {}", dir.display(), args.split))?;
            let wants = if cfg.dims == 2 { 3 } else { 4 };
            if let Some(s) = set.index().samples.iter().find(|s| s.shape.len() != wants) {
                bail!(
                    "{}: its {} samples are {}D ({} has shape {:?}), the model is {}D",
                    dir.display(),
                    args.split,
                    s.shape.len().saturating_sub(1),
                    s.source,
                    s.shape,
                    cfg.dims
                );
            }
            Source::Shards {
                set,
                dir: dir.clone(),
            }
        }
        (None, None) => bail!("give -i FILE|FOLDER or --prepared DIR"),
    };
    let total = match args.max {
        0 => source.len(),
        n => n.min(source.len()),
    };
    if total == 0 {
        bail!("no samples to evaluate");
    }
    let weights = loaded.weights.to_string();
    eprintln!(
        "eval: {} sample(s), model {} ({}D, {}x downsampling), weights {weights}",
        total,
        loaded.name.as_deref().unwrap_or("from checkpoint"),
        cfg.dims,
        cfg.downsample_factor(),
    );

    let t0 = Instant::now();
    let bar = progress_bar(total);
    let mut rows = Vec::with_capacity(total);
    let mut failed = Vec::new();
    interrupt::install();
    for i in 0..total {
        if interrupt::requested().is_some() {
            break;
        }
        let name = source.name(i);
        bar.set_message(name.clone());
        match evaluate(&source, i, &mut inferencer) {
            Ok((shape, quality, windows)) => {
                bar.suspend(|| println!("ok {}", sample_line(&name, &shape, &quality, windows)));
                rows.push(Row {
                    name,
                    shape,
                    quality,
                });
            }
            Err(e) => {
                bar.suspend(|| eprintln!("FAILED {name}: {e:#}"));
                failed.push(name);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = Summary::of(&rows.iter().map(|r| r.quality).collect::<Vec<_>>());
    let stopped = interrupt::requested();
    let precision = args.net.precision_on(&[device]);
    let rule = if modality == Modality::Ct {
        "ct"
    } else {
        "mri"
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
        let report = serde_json::json!({
            "model": loaded.name,
            "weights": weights,
            "fingerprints": {
                "encoder": format!("{:012x}", prints.encoder),
                "weights": format!("{:012x}", prints.weights),
            },
            "source": match (&args.input, &args.prepared) {
                (Some(i), _) => serde_json::json!({ "input": i }),
                (_, Some(p)) => serde_json::json!({ "prepared": p, "split": args.split }),
                _ => serde_json::Value::Null,
            },
            "settings": run_settings,
            "complete": stopped.is_none() && rows.len() == total,
            "failed": failed,
            "summary": summary,
        });
        write_atomically(path, format!("{report:#}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }

    println!(
        "eval: {} of {total} sample(s) evaluated, {} failed, {:.1} s",
        rows.len(),
        failed.len(),
        t0.elapsed().as_secs_f64()
    );
    print!("{}", summary_table(&summary));
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

/// Reconstruct sample `i` and measure it: (spatial shape with channels first, metrics, windows).
fn evaluate(
    source: &Source,
    i: usize,
    inferencer: &mut Inferencer,
) -> Result<(Vec<usize>, Quality, usize)> {
    let (input, path) = source.load(i, inferencer)?;
    let out = inferencer.infer_prepared(&input, &path)?;
    let decoded = out
        .decoded
        .context("the model returned no reconstruction")?;
    let (image, channels, spatial) = input.channels_first();
    let quality = measure(&decoded.data, &image, channels, &spatial)
        .with_context(|| format!("{}", path.display()))?;
    let mut shape = vec![channels];
    shape.extend(&spatial);
    Ok((shape, quality, out.windows))
}

fn sample_line(name: &str, shape: &[usize], q: &Quality, windows: usize) -> String {
    let ms = q.ms_ssim.map_or("-".to_string(), |v| format!("{v:.4}"));
    let win = if windows > 1 {
        format!(", {windows} windows")
    } else {
        String::new()
    };
    format!(
        "{name} ({}{win}): PSNR {:.2} dB  SSIM {:.4}  MS-SSIM {ms}  L1 {:.4}",
        describe(shape),
        q.psnr,
        q.ssim,
        q.l1
    )
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_text(rows: &[Row]) -> String {
    let mut out = String::from("name,shape,l1,mse,psnr_db,ssim,ms_ssim\n");
    for r in rows {
        let q = &r.quality;
        let ms = q.ms_ssim.map_or(String::new(), |v| format!("{v:.8}"));
        out.push_str(&format!(
            "{},{},{:.8},{:.8},{:.6},{:.8},{ms}\n",
            csv_field(&r.name),
            describe(&r.shape),
            q.l1,
            q.mse,
            q.psnr,
            q.ssim
        ));
    }
    out
}

fn summary_table(s: &Summary) -> String {
    let mut out = format!(
        "{:<8} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "metric", "n", "mean", "std", "median", "min", "max"
    );
    for (name, stats) in s.rows() {
        match stats {
            Some(Stats {
                count,
                mean,
                std,
                median,
                min,
                max,
            }) => out.push_str(&format!(
                "{name:<8} {count:>5} {mean:>10.4} {std:>10.4} {median:>10.4} {min:>10.4} {max:>10.4}\n"
            )),
            None if name == "ms_ssim" => out.push_str(&format!(
                "{name:<8} {:>5} (needs every side >= {} pixels)\n",
                0,
                medvae_model::quality::ssim::MIN_MS_SSIM_SIZE
            )),
            None => out.push_str(&format!("{name:<8} {:>5}\n", 0)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_names_that_need_it() {
        assert_eq!(csv_field("a.png"), "a.png");
        assert_eq!(csv_field("a,b.png"), "\"a,b.png\"");
        assert_eq!(csv_field("say \"hi\".png"), "\"say \"\"hi\"\".png\"");
    }
}
