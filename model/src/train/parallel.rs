//! Data-parallel training: one full replica of the [`Trainer`] per device, one thread each.
//!
//! A global batch of `replicas × batch_size` images is cut into equal shards, one per replica
//! (the reference's per-process batch under Accelerate, with the same learning rate). Every
//! replica runs forward and backward on its shard in its own thread and accumulates its own
//! gradients. When an optimizer step is due, the replicas' gradients are averaged by the ring
//! all-reduce of `medvae_runtime::collective` and every replica makes the same Adam step, so
//! the replicas stay bit-identical: they start from the same weights (same seed or the same
//! checkpoint), and the all-reduce gives every rank the same bits.
//!
//! Each replica draws its own random stream (the rank is mixed into the step seed), so the
//! replicas sample different noise for their different images; rank 0 draws what a run
//! without data parallelism draws. The adaptive GAN weight is formed from each replica's own
//! gradients, as under PyTorch DDP.
//!
//! Between CUDA replicas the gradients never leave the devices: the ring moves them by
//! peer-to-peer copies (over NVLink or PCIe where the pair allows, staged by the driver
//! otherwise). CPU replicas reduce through host memory.

use super::checkpoint::RunCheckpoint;
use super::trainer::{StepKind, StepLog, Trainer, Update};
use super::TrainConfig;
use crate::layer::Param;
use medvae_runtime::collective::all_reduce_mean;
use medvae_runtime::{Device, Result, RuntimeError, Tensor};
use std::path::{Path, PathBuf};

pub struct DataParallel {
    /// Replica `r` runs on `devices[r]`; replica 0 validates, previews and checkpoints. Never
    /// empty (`new` refuses no devices).
    replicas: Vec<Trainer>,
}

impl DataParallel {
    /// One replica per entry of `devices` (at least one), each built from `config` with its
    /// device replaced.
    pub fn new(config: &TrainConfig, devices: &[String]) -> Result<DataParallel> {
        if devices.is_empty() {
            return Err(RuntimeError::Other(
                "data parallel: no devices given".into(),
            ));
        }
        let mut replicas = Vec::with_capacity(devices.len());
        for (rank, device) in devices.iter().enumerate() {
            let mut c = config.clone();
            c.device = device.clone();
            let mut t = Trainer::new(c).map_err(|e| match devices.len() {
                1 => e,
                _ => RuntimeError::Other(format!("replica {rank} on {device}: {e}")),
            })?;
            t.rank = rank;
            t.replicas = devices.len();
            replicas.push(t);
        }
        Ok(DataParallel { replicas })
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// Start the next epoch's batch count on every replica.
    pub fn end_epoch(&mut self) {
        self.replicas.iter_mut().for_each(Trainer::end_epoch);
    }

    /// Record the best validation loss so far on every replica (checkpoints keep it).
    pub fn set_best_val(&mut self, rec_loss: f64) {
        for t in &mut self.replicas {
            t.best_val = Some(rec_loss);
        }
    }

    /// Replica `rank`, if there is one.
    pub fn replica(&mut self, rank: usize) -> Option<&mut Trainer> {
        self.replicas.get_mut(rank)
    }

    /// The replica that validates, previews and writes checkpoints.
    pub fn lead(&mut self) -> &mut Trainer {
        &mut self.replicas[0]
    }

    /// Train on one global batch `[replicas × b, …]`: a shard of `b` images per replica.
    /// The log holds the replicas' mean losses.
    pub fn train_batch(&mut self, x: &Tensor, index: usize) -> Result<StepLog> {
        if let [only] = self.replicas.as_mut_slice() {
            // Nothing to share or average: no copy of the batch on the single-device path.
            return only.train_batch(x, index);
        }
        let shards = shard_batch(x, self.replicas.len())?;
        let outcomes = run_each(&mut self.replicas, shards, |t, shard| {
            t.accumulate_batch(&shard, index)
        })?;
        self.broadcast_buffers()?;
        let update = outcomes[0].1;
        if outcomes.iter().any(|(_, u)| *u != update) {
            return Err(RuntimeError::Other(
                "data parallel: the replicas disagree on the optimizer step (their accumulation \
                 counters differ)"
                    .into(),
            ));
        }
        if let Some(update) = update {
            self.all_reduce_gradients(update)?;
            run_each(&mut self.replicas, vec![(); outcomes.len()], |t, ()| {
                t.apply_update(update)
            })?;
        }
        let logs: Vec<StepLog> = outcomes.into_iter().map(|(log, _)| log).collect();
        Ok(self.share_log(mean_log(&logs)))
    }

    /// Make the replicas' mean losses every replica's record of the last step (discriminator
    /// steps report the last generator step's losses, and checkpoints keep them), and return
    /// the log of this step.
    fn share_log(&mut self, mean: StepLog) -> StepLog {
        match mean.kind {
            StepKind::Generator => {
                for t in &mut self.replicas {
                    t.last_gen = mean;
                }
                mean
            }
            StepKind::Discriminator => {
                for t in &mut self.replicas {
                    t.last_gen.disc_loss = mean.disc_loss;
                }
                StepLog {
                    kind: StepKind::Discriminator,
                    global_step: mean.global_step,
                    disc_loss: mean.disc_loss,
                    ..self.replicas[0].last_gen
                }
            }
        }
    }

    /// Average the gradients `update` reads over the replicas, in place on each (on CUDA
    /// replicas by peer-to-peer copies, otherwise through the host: `collective`).
    pub fn all_reduce_gradients(&mut self, update: Update) -> Result<()> {
        if self.replicas.len() < 2 {
            return Ok(());
        }
        let (keys, mut grads): (Vec<Vec<String>>, Vec<Vec<Tensor>>) = self
            .replicas
            .iter_mut()
            .map(|t| take_gradients(t, update).into_iter().unzip())
            .unzip();
        let result = match keys.iter().position(|k| *k != keys[0]) {
            Some(rank) => Err(RuntimeError::Other(format!(
                "data parallel: replica {rank} holds gradients for other parameters than \
                 replica 0"
            ))),
            None => all_reduce_mean(&mut grads),
        };
        // The gradients go back even after a failure, so the replicas stay whole.
        for ((t, keys), grads) in self.replicas.iter_mut().zip(keys).zip(grads) {
            put_gradients(t, update, keys.into_iter().zip(grads));
        }
        result
    }

    /// Give every replica replica 0's buffers (the discriminator's BatchNorm running
    /// statistics, which each replica updates from its own shard), as PyTorch DDP broadcasts
    /// buffers from rank 0: without it the replicas' discriminators drift apart.
    pub fn broadcast_buffers(&mut self) -> Result<()> {
        let Some((lead, others)) = self.replicas.split_first_mut() else {
            return Ok(());
        };
        if others.is_empty() {
            return Ok(());
        }
        let mut buffers = Vec::new();
        for update in [Update::Autoencoder, Update::Discriminator] {
            lead.visit_update_params(update, &mut |key, p| {
                if p.kind.is_buffer() {
                    buffers.push((key.to_string(), p.value.clone()));
                }
            });
        }
        for t in others {
            let mut next = buffers.iter();
            let mut result = Ok(());
            for update in [Update::Autoencoder, Update::Discriminator] {
                t.visit_update_params(update, &mut |key, p| {
                    if result.is_err() || !p.kind.is_buffer() {
                        return;
                    }
                    result = match next.next() {
                        Some((k, v)) if k == key => v
                            .on_device(p.value.device())
                            .map(|v| p.value = v.into_owned()),
                        _ => Err(RuntimeError::Other(format!(
                            "data parallel: replica buffers differ at `{key}`"
                        ))),
                    };
                });
            }
            result?;
        }
        Ok(())
    }

    /// Write checkpoint `name` under `dir` from replica 0, after averaging the gradients
    /// still waiting for their accumulation ([`DataParallel::settle_pending`]).
    pub fn save_checkpoint(&mut self, dir: &Path, name: &str) -> Result<PathBuf> {
        self.settle_pending()?;
        self.lead().save_checkpoint(dir, name)
    }

    /// Load one checkpoint, read once, into every replica. Returns the number of replicas
    /// that wrote it.
    pub fn resume_from(&mut self, ckpt: &Path) -> Result<usize> {
        let read = RunCheckpoint::read(ckpt)?;
        let mut written_by = 1;
        for t in &mut self.replicas {
            written_by = t.restore(&read)?;
        }
        Ok(written_by)
    }

    /// Average the gradients still waiting for their accumulation to fill, so that replica 0
    /// can checkpoint them for all: the average is what the pending step would have summed
    /// (to rounding), on every replica.
    pub fn settle_pending(&mut self) -> Result<()> {
        let lead = &self.replicas[0];
        let (gen, disc) = (lead.gen_accumulated > 0, lead.disc_accumulated > 0);
        if gen {
            self.all_reduce_gradients(Update::Autoencoder)?;
        }
        if disc {
            self.all_reduce_gradients(Update::Discriminator)?;
        }
        Ok(())
    }
}

/// Whether a parameter's gradient takes part in an update (what Adam reads).
fn reduced(p: &Param) -> bool {
    p.trainable && !p.kind.is_buffer() && p.grad.is_some()
}

/// Take out the gradients `update` reads, with their keys.
fn take_gradients(t: &mut Trainer, update: Update) -> Vec<(String, Tensor)> {
    let mut taken = Vec::new();
    t.visit_update_params(update, &mut |key, p| {
        if reduced(p) {
            if let Some(g) = p.grad.take() {
                taken.push((key.to_string(), g));
            }
        }
    });
    taken
}

/// Put back what [`take_gradients`] took (in the same visiting order).
fn put_gradients(t: &mut Trainer, update: Update, grads: impl Iterator<Item = (String, Tensor)>) {
    let mut next = grads.peekable();
    t.visit_update_params(update, &mut |key, p| {
        if let Some((_, g)) = next.next_if(|(k, _)| k == key) {
            p.grad = Some(g);
        }
    });
}

/// A tensor's f32 values on the host (a device tensor is downloaded; a failure is an error).
fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    let host = t.on_device(Device::Cpu)?;
    Ok(host.f32s("data-parallel batch")?.to_vec())
}

/// Cut `[n·b, …]` into `n` host tensors `[b, …]`.
fn shard_batch(x: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    let shape = x.shape();
    let batch = shape.first().copied().unwrap_or(0);
    if n == 0 || batch == 0 || !batch.is_multiple_of(n) {
        return Err(RuntimeError::Other(format!(
            "data parallel: a batch of {batch} cannot be shared equally by {n} replicas"
        )));
    }
    let mut shard_shape = shape.to_vec();
    shard_shape[0] = batch / n;
    let data = host_values(x)?;
    data.chunks_exact(data.len() / n)
        .map(|c| Tensor::from_vec(&shard_shape, c.to_vec()))
        .collect()
}

/// Run `work` on every replica with its input, one thread each; the first error (or a
/// replica's panic) is the result.
fn run_each<I: Send, T: Send>(
    replicas: &mut [Trainer],
    inputs: Vec<I>,
    work: impl Fn(&mut Trainer, I) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter_mut()
            .zip(inputs)
            .map(|(t, input)| scope.spawn(move || work(t, input)))
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join()
                    .map_err(|_| RuntimeError::Other(format!("replica {rank} panicked")))?
                    .map_err(|e| RuntimeError::Other(format!("replica {rank}: {e}")))
            })
            .collect()
    })
}

/// The replicas' mean losses (kind and step are the same on every replica).
fn mean_log(logs: &[StepLog]) -> StepLog {
    let n = logs.len() as f32;
    let mean = |f: fn(&StepLog) -> f32| logs.iter().map(f).sum::<f32>() / n;
    StepLog {
        ae_loss: mean(|l| l.ae_loss),
        rec_loss: mean(|l| l.rec_loss),
        nll: mean(|l| l.nll),
        kl: mean(|l| l.kl),
        d_weight: mean(|l| l.d_weight),
        g_loss: mean(|l| l.g_loss),
        disc_loss: mean(|l| l.disc_loss),
        ..logs[0]
    }
}
