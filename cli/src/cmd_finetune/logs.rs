//! What a run writes besides checkpoints: `metrics.jsonl` (one JSON object per logged step and
//! per validation), a TensorBoard event file with the same scalars, and a PNG preview
//! (inputs over reconstructions) of the first validation batch at every validation.

use super::tensorboard::EventWriter;
use anyhow::{Context, Result};
use image::{GrayImage, Luma};
use medvae_model::autoencoder::{Outputs, Sampling};
use medvae_model::layer::Ctx;
use medvae_model::train::{StepKind, StepLog, Trainer, ValidationLog};
use medvae_runtime::data::loader::Loader;
use medvae_runtime::Tensor;
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct RunLogs {
    dir: PathBuf,
    metrics: File,
    events: EventWriter,
}

impl RunLogs {
    /// Open the logs of the run in `dir`; `append` keeps earlier lines (a resumed run).
    pub fn open(dir: &Path, append: bool) -> Result<RunLogs> {
        if !append {
            // A fresh run in an old run's folder: its curves would mix with the new ones.
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with("events.out.tfevents.") {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
        let path = dir.join("metrics.jsonl");
        let metrics = OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let events = EventWriter::create(dir).context("creating the TensorBoard event file")?;
        Ok(RunLogs {
            dir: dir.to_path_buf(),
            metrics,
            events,
        })
    }

    pub fn train_step(
        &mut self,
        log: &StepLog,
        epoch: u64,
        step_s: f64,
        images: usize,
    ) -> Result<()> {
        let kind = match log.kind {
            StepKind::Generator => "generator",
            StepKind::Discriminator => "discriminator",
        };
        let line = json!({
            "split": "train", "epoch": epoch, "step": log.global_step, "kind": kind,
            "aeloss": log.ae_loss, "rec_loss": log.rec_loss, "nll": log.nll, "kl": log.kl,
            "d_weight": log.d_weight, "g_loss": log.g_loss, "discloss": log.disc_loss,
            "step_s": step_s, "img_per_s": images as f64 / step_s,
        });
        writeln!(self.metrics, "{line}")?;
        self.metrics.flush()?;
        self.events.scalars(
            log.global_step,
            &[
                ("train/aeloss", log.ae_loss as f64),
                ("train/rec_loss", log.rec_loss as f64),
                ("train/kl", log.kl as f64),
                ("train/d_weight", log.d_weight as f64),
                ("train/g_loss", log.g_loss as f64),
                ("train/discloss", log.disc_loss as f64),
                ("train/img_per_s", images as f64 / step_s),
            ],
        )?;
        Ok(())
    }

    pub fn validation(&mut self, v: &ValidationLog, epoch: u64, step: u64) -> Result<()> {
        let line = json!({
            "split": "valid", "epoch": epoch, "step": step, "aeloss": v.ae_loss,
            "rec_loss": v.rec_loss, "mse": v.mse, "psnr": v.psnr, "ssim": v.ssim,
            "batches": v.batches,
        });
        writeln!(self.metrics, "{line}")?;
        self.metrics.flush()?;
        self.events.scalars(
            step,
            &[
                ("valid/aeloss", v.ae_loss),
                ("valid/rec_loss", v.rec_loss),
                ("valid/mse", v.mse),
                ("valid/psnr", v.psnr),
                ("valid/ssim", v.ssim),
            ],
        )?;
        Ok(())
    }

    /// `previews/epoch-NNNN.png`: the first validation batch's images (top row) over their
    /// reconstructions (bottom row), first channel, [-1, 1] mapped to [0, 255]; volumes by
    /// their middle depth slice.
    pub fn preview(&mut self, trainer: &mut Trainer, val: &Loader, epoch: u64) -> Result<()> {
        let Some(batch) = val.epoch(0).next() else {
            return Ok(());
        };
        let batch = batch.context("loading the preview batch")?;
        let shape = batch.shape().to_vec();
        let x = Tensor::from_vec(&shape, batch.data().to_vec())?.into_device(trainer.device)?;
        let mut ctx = Ctx::eval();
        let outputs = Outputs {
            decode: true,
            latent: false,
        };
        let rec = trainer
            .ae
            .forward(&x, Sampling::Mode, outputs, &mut ctx)?
            .dec
            .context("no reconstruction")?;
        // Volumes are shown by their middle depth slice.
        let (images, [n, h, w, c]) = match shape[..] {
            [n, h, w, c] => ([x.to_f32_vec(), rec.to_f32_vec()], [n, h, w, c]),
            [n, d, h, w, c] => (
                [
                    middle_slice(&x.to_f32_vec(), [n, d, h, w, c]),
                    middle_slice(&rec.to_f32_vec(), [n, d, h, w, c]),
                ],
                [n, h, w, c],
            ),
            _ => return Ok(()),
        };
        let mut img = GrayImage::new((n * w) as u32, (2 * h) as u32);
        for (row, t) in images.iter().enumerate() {
            for i in 0..n {
                for y in 0..h {
                    for xx in 0..w {
                        let v = t[((i * h + y) * w + xx) * c];
                        let p = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                        img.put_pixel((i * w + xx) as u32, (row * h + y) as u32, Luma([p]));
                    }
                }
            }
        }
        let dir = self.dir.join("previews");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("epoch-{epoch:04}.png"));
        img.save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The middle depth slice `[N, H, W, C]` of a `[N, D, H, W, C]` batch.
fn middle_slice(v: &[f32], [n, d, h, w, c]: [usize; 5]) -> Vec<f32> {
    let plane = h * w * c;
    (0..n)
        .flat_map(|i| {
            let start = (i * d + d / 2) * plane;
            v[start..start + plane].iter().copied()
        })
        .collect()
}
