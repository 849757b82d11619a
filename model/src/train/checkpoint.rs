//! Run checkpoints: a folder `<run>/checkpoints/<name>/` with
//! * `model.safetensors`: the autoencoder under its PyTorch keys (loadable as `weights:`, by
//!   `medvae-fast infer --weights`, and by PyTorch via safetensors), its architecture in the
//!   metadata;
//! * `trainer.safetensors`: everything else a resumed run needs — both optimizers' moments,
//!   the discriminator, `logvar`, gradients accumulated but not yet applied (engine layout),
//!   and in the metadata the counters and the resolved config.
//!
//! The folder is written beside its final place, every file fsynced, then renamed into place
//! (an older folder of the same name is moved aside first and removed after), so a crash
//! leaves the previous checkpoint or the new one, never a torn one.

use super::trainer::{StepLog, Trainer};
use crate::layer::Parameters;
use crate::layers::state::{load_state_dict, to_state_dict};
use medvae_runtime::checkpoint::{
    load_checkpoint_detailed, save_safetensors_with, NamedTensor, SaveOptions, StateDict,
};
use medvae_runtime::{Result, RuntimeError, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The counters of a run, stored as JSON in `trainer.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counters {
    global_step: u64,
    epoch: u64,
    batch_in_epoch: usize,
    best_val: Option<f64>,
    gen_accumulated: usize,
    disc_accumulated: usize,
    /// What discriminator steps log for the generator until the next generator step.
    last_generator: StepLog,
    /// Data-parallel replicas sharing each global batch (`batch_in_epoch` counts those
    /// batches). Checkpoints from before data parallelism had one.
    #[serde(default = "one_replica")]
    replicas: usize,
}

fn one_replica() -> usize {
    1
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::file(path, e.to_string())
}

fn ck(e: medvae_runtime::checkpoint::CheckpointError) -> RuntimeError {
    RuntimeError::Other(e.to_string())
}

/// Gradients not yet applied, engine layout, under `<prefix><key>`.
fn export_pending(model: &mut dyn Parameters, prefix: &str, out: &mut StateDict) -> Result<()> {
    let mut result = Ok(());
    model.visit_params("", &mut |key, p| {
        if let (Ok(()), Some(g)) = (&result, &p.grad) {
            result = out
                .insert(
                    format!("{prefix}{key}"),
                    NamedTensor::from_f32(g.shape().to_vec(), g.to_f32_vec()),
                )
                .map_err(ck);
        }
    });
    result
}

fn import_pending(model: &mut dyn Parameters, prefix: &str, src: &StateDict) -> Result<()> {
    let mut result = Ok(());
    model.visit_params("", &mut |key, p| {
        p.grad = None;
        if result.is_err() {
            return;
        }
        if let Some(t) = src.get(&format!("{prefix}{key}")) {
            result = t
                .as_f32()
                .ok_or_else(|| {
                    RuntimeError::Other(format!("pending gradient `{key}` is not float"))
                })
                .and_then(|v| Tensor::from_vec(&t.shape, v.to_vec()))
                .map(|g| p.grad = Some(g));
        }
    });
    result
}

impl Trainer {
    /// Write checkpoint `name` (e.g. `last`, `best`, `step-500`, `epoch-0003`) under `dir`.
    pub fn save_checkpoint(&mut self, dir: &Path, name: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let final_dir = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;

        let model = to_state_dict(&mut self.ae, "model")?;
        let arch = serde_json::json!({
            "ddconfig": self.model_config.to_ddconfig(256),
            "embed_dim": self.model_config.embed_dim,
            "dims": self.model_config.dims,
            "lora_rank": self.model_config.lora_rank,
        });
        let meta = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            ("medvae_fast".to_string(), arch.to_string()),
        ]);
        save_safetensors_with(
            &tmp.join("model.safetensors"),
            &model,
            &SaveOptions {
                metadata: Some(meta),
                ..Default::default()
            },
        )
        .map_err(ck)?;

        let mut state = StateDict::new("trainer");
        self.opt_ae.export("opt_ae.", &mut state)?;
        self.opt_disc.export("opt_disc.", &mut state)?;
        for (k, t) in to_state_dict(&mut self.loss.disc, "disc")?.iter() {
            state.insert(format!("disc.{k}"), t.clone()).map_err(ck)?;
        }
        state
            .insert(
                "loss.logvar".into(),
                NamedTensor::from_f32(vec![], self.loss.logvar.value.to_f32_vec()),
            )
            .map_err(ck)?;
        export_pending(&mut self.ae, "pending.ae.", &mut state)?;
        export_pending(&mut self.loss.disc, "pending.disc.", &mut state)?;
        if let Some(g) = &self.loss.logvar.grad {
            state
                .insert(
                    "pending.logvar".into(),
                    NamedTensor::from_f32(vec![], g.to_f32_vec()),
                )
                .map_err(ck)?;
        }
        let counters = Counters {
            global_step: self.global_step,
            epoch: self.epoch,
            batch_in_epoch: self.batch_in_epoch,
            best_val: self.best_val,
            gen_accumulated: self.gen_accumulated,
            disc_accumulated: self.disc_accumulated,
            last_generator: self.last_gen,
            replicas: self.replicas,
        };
        let config = serde_json::to_string(&self.config)
            .map_err(|e| RuntimeError::Other(format!("config to JSON: {e}")))?;
        let counters = serde_json::to_string(&counters)
            .map_err(|e| RuntimeError::Other(format!("counters to JSON: {e}")))?;
        save_safetensors_with(
            &tmp.join("trainer.safetensors"),
            &state,
            &SaveOptions {
                metadata: Some(HashMap::from([
                    ("counters".to_string(), counters),
                    ("config".to_string(), config),
                ])),
                ..Default::default()
            },
        )
        .map_err(ck)?;
        sync_dir(&tmp);

        // Move the old folder aside, the new one in, then drop the old one.
        let old = dir.join(format!(".{name}.old-{}", std::process::id()));
        if final_dir.exists() {
            std::fs::rename(&final_dir, &old).map_err(|e| io_err(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| io_err(&final_dir, e))?;
        sync_dir(dir);
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io_err(&old, e))?;
        }
        Ok(final_dir)
    }

    /// Continue from a checkpoint folder written by [`Trainer::save_checkpoint`]: weights,
    /// optimizer moments, pending gradients and counters. The architecture must match.
    /// Returns the number of data-parallel replicas that wrote it.
    pub fn resume_from(&mut self, ckpt: &Path) -> Result<usize> {
        self.restore(&RunCheckpoint::read(ckpt)?)
    }

    /// [`Trainer::resume_from`] with the folder already read (data-parallel replicas read it
    /// once for all).
    pub fn restore(&mut self, ckpt: &RunCheckpoint) -> Result<usize> {
        let RunCheckpoint {
            model_file,
            model,
            trainer_file,
            state,
            counters,
        } = ckpt;
        load_state_dict(&mut self.ae, model)?.ensure_exact(&model_file.display().to_string())?;
        let mut disc = StateDict::new(trainer_file.display().to_string());
        for (k, t) in state.iter() {
            if let Some(key) = k.strip_prefix("disc.") {
                disc.insert(key.to_string(), t.clone()).map_err(ck)?;
            }
        }
        load_state_dict(&mut self.loss.disc, &disc)?
            .ensure_exact(&format!("{} (discriminator)", trainer_file.display()))?;
        let logvar = state
            .get("loss.logvar")
            .and_then(|t| t.as_f32())
            .ok_or_else(|| RuntimeError::file(trainer_file, "no `loss.logvar`"))?;
        self.loss.logvar.value = Tensor::from_vec(&[], logvar.to_vec())?;
        self.opt_ae.import("opt_ae.", state)?;
        self.opt_disc.import("opt_disc.", state)?;
        import_pending(&mut self.ae, "pending.ae.", state)?;
        import_pending(&mut self.loss.disc, "pending.disc.", state)?;
        self.loss.logvar.grad = match state.get("pending.logvar").and_then(|t| t.as_f32()) {
            Some(v) => Some(Tensor::from_vec(&[], v.to_vec())?),
            None => None,
        };
        self.global_step = counters.global_step;
        self.epoch = counters.epoch;
        // The position in the epoch is kept in images: a run resumed on another number of
        // replicas continues from the last global batch it completes (at most one global
        // batch of images is seen twice).
        let images = counters.batch_in_epoch * counters.replicas.max(1);
        self.batch_in_epoch = images / self.replicas.max(1);
        self.best_val = counters.best_val;
        self.gen_accumulated = counters.gen_accumulated;
        self.disc_accumulated = counters.disc_accumulated;
        self.last_gen = counters.last_generator;
        self.place()?;
        Ok(counters.replicas)
    }
}

/// A run checkpoint folder read into memory and checked (files present, weights finite,
/// counters readable), ready to [`Trainer::restore`] into one or more trainers.
pub struct RunCheckpoint {
    model_file: PathBuf,
    model: StateDict,
    trainer_file: PathBuf,
    state: StateDict,
    counters: Counters,
}

impl RunCheckpoint {
    pub fn read(ckpt: &Path) -> Result<RunCheckpoint> {
        let model_file = ckpt.join("model.safetensors");
        let trainer_file = ckpt.join("trainer.safetensors");
        for f in [&model_file, &trainer_file] {
            if !f.is_file() {
                return Err(RuntimeError::file(
                    f,
                    "missing: resume_from_ckpt must name a checkpoint folder written by \
                     medvae-fast finetune (holding model.safetensors and trainer.safetensors)",
                ));
            }
        }
        let model = load_checkpoint_detailed(&model_file).map_err(ck)?.state;
        model.check_finite().map_err(ck)?;
        let loaded = load_checkpoint_detailed(&trainer_file).map_err(ck)?;
        let counters: Counters = loaded
            .metadata
            .get("counters")
            .ok_or_else(|| RuntimeError::file(&trainer_file, "no `counters` metadata"))
            .and_then(|s| {
                serde_json::from_str(s).map_err(|e| io_err(&trainer_file, format!("counters: {e}")))
            })?;
        Ok(RunCheckpoint {
            model_file,
            model,
            trainer_file,
            state: loaded.state,
            counters,
        })
    }
}

fn sync_dir(dir: &Path) {
    // Durability of the folder entries; filesystems without directory fsync just skip it.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}
