//! `medvae-fast finetune --config FILE [key=value ...]`: prepare the data on first use, train,
//! validate every epoch, checkpoint, log. The training itself is `medvae_model::train`.

mod config;
mod logs;
mod tensorboard;

use crate::cmd_data::{fingerprint, PrepareArgs};
use crate::interrupt;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logs::RunLogs;
use medvae_model::train::DataParallel;
use medvae_runtime::data::loader::{Loader, LoaderConfig};
use medvae_runtime::Tensor;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(clap::Args)]
pub struct FinetuneArgs {
    /// Experiment config (configs/*.yaml). Relative paths inside it are taken from the
    /// current directory, as the reference's Hydra configs are.
    #[arg(long)]
    config: PathBuf,
    /// Overrides, e.g. `max_epoch=3 criterion.disc_start=0 resume_from_ckpt=runs/x/checkpoints/last`.
    overrides: Vec<String>,
}

/// Train; exits with 128 + the signal's number when SIGINT or SIGTERM stopped the run (after
/// writing `checkpoints/last`).
pub fn run(args: FinetuneArgs) -> Result<ExitCode> {
    let cfg = config::load(&args.config, &args.overrides)?;
    if cfg.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .build_global()
            .context("setting the thread count")?;
    }
    let out = cfg.output_dir.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let resume = resolve_resume(&cfg.resume_from_ckpt, &out);
    if resume.is_none() {
        let earlier = earlier_checkpoints(&out);
        if !cfg.overwrite {
            refuse_to_replace_a_run(&out, &earlier)?;
        } else if !earlier.is_empty() {
            clear_earlier_run(&out, &earlier)?;
        }
    }
    ensure_prepared(&cfg.dataloader.config, &cfg.dataloader.prepared_dir)?;
    let devices = cfg.replica_devices();
    let mut replicas = DataParallel::new(&cfg, &devices)?;
    if cfg.weights.is_none() && resume.is_none() {
        eprintln!(
            "note: no `weights:` given, so the autoencoder starts from random initialisation \
             (a from-scratch run). Published MedVAE weights: see the README, `Weights`."
        );
    }
    if let Some(ckpt) = &resume {
        let written_by = replicas
            .resume_from(ckpt)
            .with_context(|| format!("resuming from {}", ckpt.display()))?;
        let trainer = replicas.lead();
        eprintln!(
            "resumed from {} at global step {} (epoch {}, batch {})",
            ckpt.display(),
            trainer.global_step,
            trainer.epoch,
            trainer.batch_in_epoch
        );
        if written_by != trainer.replicas {
            eprintln!(
                "note: the checkpoint was written by {} data-parallel replica(s), this run has {}: \
                 each step now takes {} images instead of {} (same learning rate), and the \
                 position in the epoch was converted to this run's global batches",
                written_by,
                trainer.replicas,
                trainer.replicas * cfg.batch_size,
                written_by * cfg.batch_size
            );
        }
    }
    let n_replicas = replicas.len();
    let trainer = replicas.lead();
    let (all, trainable) = trainer.parameter_counts();
    let placement = if n_replicas == 1 {
        trainer.device.describe()
    } else {
        format!(
            "{n_replicas} data-parallel replicas ({}), batch_size {} each",
            devices.join(", "),
            cfg.batch_size
        )
    };
    eprintln!(
        "{}: {}D model, {all} parameters, {trainable} trained; lr {:.3e}; on {placement} in {}; \
         output {}",
        cfg.task_name,
        trainer.model_config.dims,
        cfg.learning_rate(),
        cfg.precision,
        out.display()
    );
    if !trainer.device.is_cpu() && cfg.precision == "tf32" {
        eprintln!(
            "note: on CUDA, precision: bf16 runs the convolutions about 2.5x faster than tf32 \
             (docs/BENCHMARKS.md)"
        );
    }

    // 3D trains on random cubic crops (padded with -1 where a volume is smaller).
    let dims = trainer.model_config.dims;
    let loader_cfg = |batch, seed| {
        if dims == 3 {
            let mut c = LoaderConfig::volumes(batch, seed);
            c.crop = Some([cfg.dataloader.crop; 3]);
            c
        } else {
            LoaderConfig::images(batch, seed)
        }
    };
    // One global batch feeds every replica `batch_size` images; a last, smaller batch could
    // not be shared equally, so data-parallel epochs complete it with images from the start
    // of the epoch, as Accelerate's `even_batches` does.
    let mut train_cfg = loader_cfg(cfg.batch_size * n_replicas, cfg.seed);
    train_cfg.workers = cfg.dataloader.workers;
    train_cfg.pad_last = n_replicas > 1;
    let train = Loader::open(&cfg.dataloader.prepared_dir, "train", train_cfg)
        .context("opening the train split")?;
    let mut val_cfg = loader_cfg(cfg.batch_size, cfg.seed);
    val_cfg.shuffle = false;
    val_cfg.workers = 1;
    let val = Loader::open(&cfg.dataloader.prepared_dir, "val", val_cfg)
        .context("opening the val split (the CSV needs rows with split `val`)")?;
    if train.samples() == 0 {
        bail!(
            "{} holds no training images: the CSVs of {} need rows with split `train`",
            cfg.dataloader.prepared_dir.display(),
            cfg.dataloader.config.display()
        );
    }
    if train.batches_per_epoch() == 0 {
        bail!(
            "{} holds {} training images, fewer than one global batch ({n_replicas} replicas × \
             batch_size {})",
            cfg.dataloader.prepared_dir.display(),
            train.samples(),
            cfg.batch_size
        );
    }
    // Without a val split: say so once, and write `last` and the periodic checkpoints only
    // (no NaN metrics, no `best`).
    let validating = val.samples() > 0;
    if !validating {
        eprintln!(
            "note: {} holds no validation images (split `val`): validation, previews and the \
             `best` checkpoint are skipped",
            cfg.dataloader.prepared_dir.display()
        );
    }
    let mut logs = RunLogs::open(&out, replicas.lead().global_step > 0)?;
    let ckpt_dir = out.join("checkpoints");
    let per_epoch = train.batches_per_epoch();
    let max_steps = cfg.max_steps.unwrap_or(u64::MAX);
    interrupt::install();

    let bar = ProgressBar::with_draw_target(
        Some(per_epoch as u64),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        ProgressStyle::with_template(
            "epoch {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    // For the whole run's remaining time: steps (batches) from here to the end.
    let (run_started, first_step) = (Instant::now(), replicas.lead().global_step);
    let last_step = (cfg.max_epoch * per_epoch as u64).min(max_steps);
    while replicas.lead().epoch < cfg.max_epoch && replicas.lead().global_step < max_steps {
        let (epoch, skip) = (replicas.lead().epoch, replicas.lead().batch_in_epoch);
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.max_epoch));
        bar.set_position(skip as u64);
        bar.reset_eta();
        let started = Instant::now();
        for (index, batch) in train.epoch(epoch).enumerate() {
            let batch = batch.context("loading a training batch")?;
            if index < skip {
                continue;
            }
            let x = Tensor::from_vec(batch.shape(), batch.data().to_vec())?;
            let t0 = Instant::now();
            let log = replicas.train_batch(&x, index)?;
            let step_s = t0.elapsed().as_secs_f64();
            bar.inc(1);
            bar.set_message(format!(
                "ae {:.4} rec {:.4} disc {:.4} | {:.2} img/s",
                log.ae_loss,
                log.rec_loss,
                log.disc_loss,
                batch.len() as f64 / step_s
            ));
            if log.global_step % cfg.log_every_n_steps == 0 {
                logs.train_step(&log, epoch, step_s, batch.len())?;
            }
            let global_step = replicas.lead().global_step;
            if global_step % cfg.ckpt_every_n_steps == 0 {
                let name = format!("step-{global_step}");
                bar.suspend(|| replicas.save_checkpoint(&ckpt_dir, &name))?;
            }
            if let Some(signal) = interrupt::requested() {
                bar.finish_and_clear();
                let last = replicas.save_checkpoint(&ckpt_dir, "last")?;
                eprintln!(
                    "stopped by {} at global step {global_step} (epoch {}, batch {} of {per_epoch}); \
                     continue with resume_from_ckpt={}",
                    interrupt::name(signal),
                    epoch + 1,
                    index + 1,
                    last.display()
                );
                return Ok(interrupt::exit_code(signal));
            }
            if cfg.fast_dev_run || global_step >= max_steps {
                break;
            }
        }
        let train_s = started.elapsed().as_secs_f64();
        if replicas.lead().batch_in_epoch < per_epoch && !cfg.fast_dev_run {
            // Stopped inside the epoch (max_steps): keep the position, so that resuming
            // continues this epoch exactly where it stopped.
            replicas.save_checkpoint(&ckpt_dir, "last")?;
            break;
        }
        // Without a val split there is nothing to validate, preview or rank.
        let validation = if validating {
            let val_batches = val.epoch(0).map(|b| {
                b.map_err(|e| medvae_runtime::RuntimeError::Other(format!("val batch: {e}")))
                    .and_then(|b| Tensor::from_vec(b.shape(), b.data().to_vec()))
            });
            Some(replicas.lead().validate(val_batches)?)
        } else {
            None
        };
        replicas.end_epoch();
        let step_now = replicas.lead().global_step;
        let left = time_left(
            run_started.elapsed().as_secs_f64(),
            step_now.saturating_sub(first_step),
            last_step.saturating_sub(step_now),
        );
        match validation {
            None => bar.suspend(|| eprintln!("epoch {}: train {train_s:.1} s{left}", epoch + 1)),
            Some(v) => {
                let best = replicas.lead().best_val.is_none_or(|b| v.rec_loss < b);
                bar.suspend(|| {
                    eprintln!(
                        "epoch {}: train {:.1} s; val ae {:.5} rec {:.5} mse {:.5} psnr {:.2} dB ssim {:.4}{}{left}",
                        epoch + 1,
                        train_s,
                        v.ae_loss,
                        v.rec_loss,
                        v.mse,
                        v.psnr,
                        v.ssim,
                        if best { " (best)" } else { "" }
                    )
                });
                logs.validation(&v, epoch, replicas.lead().global_step)?;
                logs.preview(replicas.lead(), &val, epoch)?;
                if best {
                    replicas.set_best_val(v.rec_loss);
                    replicas.save_checkpoint(&ckpt_dir, "best")?;
                }
            }
        }
        if (epoch + 1).is_multiple_of(cfg.ckpt_every_n_epochs) {
            replicas.save_checkpoint(&ckpt_dir, &format!("epoch-{epoch:04}"))?;
        }
        replicas.save_checkpoint(&ckpt_dir, "last")?;
        if cfg.fast_dev_run {
            break;
        }
    }
    bar.finish_and_clear();
    eprintln!(
        "done: {} steps; checkpoints in {}; metrics in {}",
        replicas.lead().global_step,
        ckpt_dir.display(),
        out.join("metrics.jsonl").display()
    );
    crate::profiles::print();
    Ok(ExitCode::SUCCESS)
}

/// `"; about 1 h 05 min left"` for `left` more steps at the pace of `done` steps in
/// `elapsed` seconds (validation and checkpoints included); empty at the end or before a step.
fn time_left(elapsed: f64, done: u64, left: u64) -> String {
    if done == 0 || left == 0 {
        return String::new();
    }
    let secs = (elapsed / done as f64 * left as f64).round() as u64;
    let text = match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    };
    format!("; about {text} left")
}

/// `resume_from_ckpt=auto` is the run folder's own `checkpoints/last` when it holds one, and
/// a fresh start otherwise: a job requeued after preemption (SIGTERM writes `last`) runs the
/// same command again. Any other value is taken as it is.
fn resolve_resume(requested: &Option<PathBuf>, out: &Path) -> Option<PathBuf> {
    match requested {
        Some(auto) if auto.as_os_str() == "auto" => {
            let last = out.join("checkpoints").join("last");
            if last.is_dir() {
                Some(last)
            } else {
                eprintln!(
                    "resume_from_ckpt=auto: {} does not exist yet, so the run starts fresh",
                    last.display()
                );
                None
            }
        }
        other => other.clone(),
    }
}

/// The checkpoint folders in `out/checkpoints` (those holding a `model.safetensors`), sorted.
fn earlier_checkpoints(out: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(out.join("checkpoints")) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("model.safetensors").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
}

/// A fresh run writes `best`, `last` and the logs from its first epoch on, so in a folder
/// that holds an earlier run's checkpoints it would replace them: refused, with the ways on.
fn refuse_to_replace_a_run(out: &Path, earlier: &[String]) -> Result<()> {
    if earlier.is_empty() {
        return Ok(());
    }
    let shown = earlier.len().min(6);
    let folder = out.join("checkpoints");
    // `auto` continues from `last`; without one, name a checkpoint.
    let resume = if earlier.iter().any(|n| n == "last") {
        "resume_from_ckpt=auto".to_string()
    } else {
        format!("resume_from_ckpt={}", folder.join("NAME").display())
    };
    bail!(
        "{} already holds a run's checkpoints ({}{}). A fresh run would replace them and \
         its logs. Continue that run with {resume}, write this one elsewhere with \
         output_dir=DIR, or start over in it with overwrite=true.",
        folder.display(),
        earlier[..shown].join(", "),
        if earlier.len() > shown { ", ..." } else { "" }
    )
}

/// `overwrite=true`: the earlier run's checkpoints and previews go, so that none of them is
/// mistaken for this run's (its logs are restarted by `RunLogs::open`).
fn clear_earlier_run(out: &Path, earlier: &[String]) -> Result<()> {
    for name in earlier {
        let dir = out.join("checkpoints").join(name);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if let Ok(entries) = std::fs::read_dir(out.join("previews")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && name.ends_with(".png") {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    eprintln!(
        "overwrite=true: removed the earlier run's {} checkpoint(s) and previews from {}",
        earlier.len(),
        out.display()
    );
    Ok(())
}

/// Prepare the shards from the data config unless the folder already holds them, made from
/// the config and CSVs as they are now (see `cmd_data::fingerprint`).
fn ensure_prepared(data_config: &Path, prepared: &Path) -> Result<()> {
    let args = PrepareArgs::from_config(data_config, prepared);
    if !prepared.join("train.index.json").is_file() {
        if !data_config.is_file() {
            bail!(
                "dataloader.config {} not found (and {} holds no prepared data)",
                data_config.display(),
                prepared.display()
            );
        }
        eprintln!(
            "preparing {} into {} (again whenever the config or its CSVs change)",
            data_config.display(),
            prepared.display()
        );
    } else if !sources_changed(&args, data_config, prepared) {
        return Ok(());
    }
    crate::cmd_data::run_prepare(&args)?;
    Ok(())
}

/// Whether the shards in `prepared` were made from other sources than `args` names now. Shards
/// that cannot be checked (no fingerprint, no config, unreadable CSVs: an older or a copied
/// folder) count as unchanged; the ones a note is owed are named on stderr.
fn sources_changed(args: &PrepareArgs, data_config: &Path, prepared: &Path) -> bool {
    let Some(stored) = fingerprint::stored(prepared) else {
        eprintln!(
            "reusing {} (prepared without a record of its sources; delete that folder if {} or \
             its CSVs changed since)",
            prepared.display(),
            data_config.display()
        );
        return false;
    };
    if !data_config.is_file() {
        return false;
    }
    match args
        .datasets()
        .and_then(|specs| fingerprint::of_sources(&specs))
    {
        Ok(current) if current == stored => false,
        Ok(_) => {
            eprintln!(
                "{} or its CSVs changed since {} was prepared: preparing again",
                data_config.display(),
                prepared.display()
            );
            true
        }
        Err(e) => {
            eprintln!(
                "reusing {} without checking its sources: {e:#}",
                prepared.display()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn samples(prepared: &Path, split: &str) -> usize {
        let index = prepared.join(format!("{split}.index.json"));
        let text = std::fs::read_to_string(&index).expect("index");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        v["samples"].as_array().map_or(0, Vec::len)
    }

    /// `(train, val)` sample counts of a prepared folder.
    fn splits(prepared: &Path) -> (usize, usize) {
        (samples(prepared, "train"), samples(prepared, "val"))
    }

    /// When the train index was last written (a reused folder keeps it).
    fn index_written(prepared: &Path) -> std::time::SystemTime {
        std::fs::metadata(prepared.join("train.index.json"))
            .and_then(|m| m.modified())
            .expect("train index mtime")
    }

    #[test]
    fn time_left_reads_as_hours_minutes_or_seconds() {
        assert_eq!(time_left(10.0, 0, 5), "");
        assert_eq!(time_left(10.0, 5, 0), "");
        assert_eq!(time_left(10.0, 5, 20), "; about 40 s left");
        assert_eq!(time_left(10.0, 5, 95), "; about 3 min 10 s left");
        assert_eq!(time_left(100.0, 1, 39), "; about 1 h 05 min left");
    }

    /// A prepared folder is reused while its config and CSVs are unchanged, prepared again when
    /// a CSV moves an image to another split, and reused (with a note) when it carries no
    /// record of its sources.
    #[test]
    fn prepared_data_follow_csv_edits() {
        let tmp = tempfile::tempdir().unwrap();
        let (csv, config, prepared) = (
            tmp.path().join("split.csv"),
            tmp.path().join("data.yaml"),
            tmp.path().join("prepared"),
        );
        let data_dir = repo().join("samples/2d");
        std::fs::write(
            &config,
            format!(
                "datasets:\n  - csv: {}\n    data_dir: {}\n    suffix: \"\"\n    kind: png2d\n    \
                 merge_channels: true\n",
                csv.display(),
                data_dir.display()
            ),
        )
        .unwrap();
        let write_csv = |second: &str| {
            let text =
                format!("image_uuid,split\nct_slice_u16.png,train\nmr_slice_u8.png,{second}\n");
            std::fs::write(&csv, text).unwrap();
        };
        write_csv("train");
        ensure_prepared(&config, &prepared).unwrap();
        assert_eq!(splits(&prepared), (2, 0));
        let made = index_written(&prepared);
        ensure_prepared(&config, &prepared).unwrap();
        assert_eq!(
            made,
            index_written(&prepared),
            "unchanged sources must reuse the shards"
        );

        write_csv("val");
        ensure_prepared(&config, &prepared).unwrap();
        assert_eq!(splits(&prepared), (1, 1));

        // Shards prepared in f32 on purpose (`data prepare --dtype f32`) stay in use.
        let mut f32_args = PrepareArgs::from_config(&config, &prepared);
        f32_args.dtype = crate::cmd_data::DtypeArg::F32;
        crate::cmd_data::run_prepare(&f32_args).unwrap();
        let f32_made = index_written(&prepared);
        ensure_prepared(&config, &prepared).unwrap();
        assert_eq!(
            f32_made,
            index_written(&prepared),
            "f32 shards must stay in use"
        );

        // A CSV that cannot be read leaves the shards in use (a copied prepared folder).
        let moved = tmp.path().join("moved.csv");
        std::fs::rename(&csv, &moved).unwrap();
        ensure_prepared(&config, &prepared).unwrap();
        assert_eq!(splits(&prepared), (1, 1));
        std::fs::rename(&moved, &csv).unwrap();

        // Without a record (an older folder) the shards are reused as they are.
        std::fs::remove_file(prepared.join(fingerprint::FILE)).unwrap();
        write_csv("train");
        ensure_prepared(&config, &prepared).unwrap();
        assert_eq!(splits(&prepared), (1, 1));
    }
}
