//! The streaming training loader over memory-mapped shards.
//!
//! * Each epoch visits every sample once, in a seeded shuffle of `(seed, epoch)`.
//! * Batch `b` is assembled by worker `b % workers` and handed over through that worker's
//!   bounded queue (`sync_channel(prefetch)`); the consumer takes batches in order, round-robin
//!   over the queues. The batch sequence therefore depends only on the seed and epoch, not on
//!   the worker count or timing.
//! * 3D samples (`[D, H, W, 1]`) get a random `crop` window (64³ for finetuning) read straight
//!   from the mapping, with -1 where the volume is smaller than the crop: the reference's
//!   symmetric pad to ≥ 64 then `RandSpatialCrop`. Each sample's window comes from its own RNG,
//!   seeded from `(seed, epoch, sample index)`.
//! * 2D samples are copied whole (all samples must share a shape).
//! * f16 shards are converted to f32 while copying into the batch.
//! * Batch buffers are recycled: a [`Batch`] returns its buffers to the loader's free list when
//!   dropped, so once the pipeline is warm no batch allocates (see [`Loader::buffers_allocated`]).
//!
//! Batches are channels-last: `[N, D, H, W, C]` for 3D crops, `[N, H, W, C]` for 2D images.

use crate::data::shard::{SampleValues, ShardError, ShardSet};
use crate::data::volume3d::{crop_into, crop_origin, CropError, FINETUNE_CROP, FINETUNE_PAD_VALUE};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoaderError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("loader configuration: {0}")]
    Config(String),
    #[error("split {split}: {msg}")]
    Shapes { split: String, msg: String },
    #[error("sample {index}: {source}")]
    Crop {
        index: usize,
        #[source]
        source: CropError,
    },
    #[error("loader worker {0} stopped unexpectedly")]
    WorkerDied(usize),
}

/// How batches are made.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    /// Threads assembling batches (at least 1).
    pub workers: usize,
    /// Batches each worker may have ready ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Shuffle each epoch (otherwise index order).
    pub shuffle: bool,
    /// Leave out a last, smaller batch.
    pub drop_last: bool,
    /// Complete a last, smaller batch with samples from the start of the epoch's order, so
    /// every batch is full (Accelerate's `even_batches`, which data-parallel runs need: each
    /// replica takes an equal share). Ignored with `drop_last`. A repeated volume gets a crop
    /// of its own, as the reference's random crop draws anew for a repeat.
    pub pad_last: bool,
    /// 3D crop window; `None` takes samples whole (2D).
    pub crop: Option<[usize; 3]>,
    /// Value where a 3D crop extends past the volume.
    pub pad_value: f32,
}

impl LoaderConfig {
    /// Finetuning defaults for 3D: random 64³ crops padded with -1, shuffled, 2 workers.
    pub fn volumes(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            seed,
            workers: 2,
            prefetch: 2,
            shuffle: true,
            drop_last: false,
            pad_last: false,
            crop: Some([FINETUNE_CROP; 3]),
            pad_value: FINETUNE_PAD_VALUE,
        }
    }
    /// Finetuning defaults for 2D: whole images, shuffled, 2 workers.
    pub fn images(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            crop: None,
            ..Self::volumes(batch_size, seed)
        }
    }
}

/// A batch's storage, recycled through the loader's free list.
#[derive(Debug, Default)]
struct Buffers {
    data: Vec<f32>,
    indices: Vec<usize>,
    shape: Vec<usize>,
}

#[derive(Debug, Default)]
struct FreeList {
    free: Mutex<Vec<Buffers>>,
    allocated: AtomicUsize,
}

impl FreeList {
    /// A free buffer set, or a new one. Never blocks: back-pressure comes from the bounded
    /// queues, so a consumer that keeps batches cannot deadlock the workers.
    fn take(&self) -> Buffers {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        reused.unwrap_or_else(|| {
            self.allocated.fetch_add(1, Ordering::Relaxed);
            Buffers::default()
        })
    }
    fn give(&self, b: Buffers) {
        if let Ok(mut f) = self.free.lock() {
            f.push(b);
        }
    }
}

/// One batch; returns its buffers to the loader when dropped.
#[derive(Debug)]
pub struct Batch {
    buffers: Buffers,
    free: Arc<FreeList>,
}

impl Batch {
    /// Values, channels-last, `shape()` row-major.
    pub fn data(&self) -> &[f32] {
        &self.buffers.data
    }
    /// `[N, D, H, W, C]` (3D) or `[N, H, W, C]` (2D); `N` may be smaller for a last batch.
    pub fn shape(&self) -> &[usize] {
        &self.buffers.shape
    }
    /// Global sample indices (in the split) of the batch's items.
    pub fn indices(&self) -> &[usize] {
        &self.buffers.indices
    }
    pub fn len(&self) -> usize {
        self.buffers.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buffers.indices.is_empty()
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.free.give(std::mem::take(&mut self.buffers));
    }
}

/// A loader over one split.
#[derive(Debug)]
pub struct Loader {
    set: Arc<ShardSet>,
    cfg: LoaderConfig,
    /// Shape of one batch item (without N).
    item_shape: Vec<usize>,
    free: Arc<FreeList>,
}

impl Loader {
    /// Open `<dir>/<split>.index.json` and its shards.
    pub fn open(dir: &Path, split: &str, cfg: LoaderConfig) -> Result<Self, LoaderError> {
        Self::new(ShardSet::open(dir, split)?, cfg)
    }

    /// Check the configuration against the samples: crops need `[D, H, W, 1]` samples; whole
    /// samples must all share one shape.
    pub fn new(set: ShardSet, cfg: LoaderConfig) -> Result<Self, LoaderError> {
        if cfg.batch_size == 0 || cfg.workers == 0 || cfg.prefetch == 0 {
            return Err(LoaderError::Config(format!(
                "batch_size ({}), workers ({}) and prefetch ({}) must be at least 1",
                cfg.batch_size, cfg.workers, cfg.prefetch
            )));
        }
        let split = set.index().split.clone();
        let shapes_err = |msg: String| LoaderError::Shapes {
            split: split.clone(),
            msg,
        };
        let item_shape = match cfg.crop {
            Some(crop) => {
                if crop.contains(&0) {
                    return Err(LoaderError::Config(format!(
                        "crop {crop:?} has a zero extent"
                    )));
                }
                if let Some((i, s)) = set
                    .index()
                    .samples
                    .iter()
                    .enumerate()
                    .find(|(_, s)| s.shape.len() != 4 || s.shape[3] != 1)
                {
                    return Err(shapes_err(format!(
                        "sample {i} ({}) has shape {:?}; 3D crops need [D, H, W, 1] volumes",
                        s.source, s.shape
                    )));
                }
                vec![crop[0], crop[1], crop[2], 1]
            }
            None => {
                let first = set
                    .index()
                    .samples
                    .first()
                    .map(|s| s.shape.clone())
                    .unwrap_or_default();
                if let Some((i, s)) = set
                    .index()
                    .samples
                    .iter()
                    .enumerate()
                    .find(|(_, s)| s.shape != first)
                {
                    return Err(shapes_err(format!(
                        "sample {i} ({}) has shape {:?}, sample 0 {:?}: whole-sample batches need one shape",
                        s.source, s.shape, first
                    )));
                }
                first
            }
        };
        Ok(Loader {
            set: Arc::new(set),
            cfg,
            item_shape,
            free: Arc::new(FreeList::default()),
        })
    }

    pub fn samples(&self) -> usize {
        self.set.len()
    }
    pub fn item_shape(&self) -> &[usize] {
        &self.item_shape
    }
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.set.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }
    /// Batch buffer sets created so far (constant once the pipeline is warm).
    pub fn buffers_allocated(&self) -> usize {
        self.free.allocated.load(Ordering::Relaxed)
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.set.len()).collect();
        if self.cfg.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, epoch, u64::MAX));
            order.shuffle(&mut rng);
        }
        order
    }

    /// Start `epoch`: spawns the workers; iterate to receive its batches in order. Dropping the
    /// iterator early stops and joins the workers.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let order = Arc::new(self.order(epoch));
        let n_batches = self.batches_per_epoch();
        let workers = self.cfg.workers.min(n_batches.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.cfg.prefetch);
            let job = WorkerJob {
                worker: w,
                workers,
                n_batches,
                epoch,
                order: Arc::clone(&order),
                set: Arc::clone(&self.set),
                cfg: self.cfg.clone(),
                item_shape: self.item_shape.clone(),
                free: Arc::clone(&self.free),
                stop: Arc::clone(&stop),
            };
            let handle = std::thread::Builder::new()
                .name(format!("medvae-loader-{w}"))
                .spawn(move || job.run(tx));
            match handle {
                Ok(h) => {
                    receivers.push(rx);
                    handles.push(h);
                }
                // could not spawn: fewer workers is still correct only if the batch-to-worker
                // mapping stays the same, so report it through the iterator instead
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    return Epoch::failed(LoaderError::WorkerDied(w), stop, handles);
                }
            }
        }
        Epoch {
            receivers,
            handles,
            stop,
            next: 0,
            n_batches,
            failure: None,
        }
    }
}

/// SplitMix64-style mixing of (seed, epoch, index) into one RNG seed.
fn mix(seed: u64, epoch: u64, index: u64) -> u64 {
    let mut z = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [epoch, index] {
        z = (z ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

struct WorkerJob {
    worker: usize,
    workers: usize,
    n_batches: usize,
    epoch: u64,
    order: Arc<Vec<usize>>,
    set: Arc<ShardSet>,
    cfg: LoaderConfig,
    item_shape: Vec<usize>,
    free: Arc<FreeList>,
    stop: Arc<AtomicBool>,
}

impl WorkerJob {
    fn run(self, tx: SyncSender<Result<Batch, LoaderError>>) {
        let item_len: usize = self.item_shape.iter().product();
        for b in (self.worker..self.n_batches).step_by(self.workers) {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            let n = self.order.len();
            let start = b * self.cfg.batch_size;
            let end = if self.cfg.pad_last && !self.cfg.drop_last {
                start + self.cfg.batch_size
            } else {
                (start + self.cfg.batch_size).min(n)
            };
            let mut buffers = self.free.take();
            buffers.indices.clear();
            // Past the end (padding) the order starts again from its beginning.
            buffers
                .indices
                .extend((start..end).map(|i| self.order[i % n]));
            buffers.data.resize((end - start) * item_len, 0.0);
            buffers.shape.clear();
            buffers.shape.push(end - start);
            buffers.shape.extend_from_slice(&self.item_shape);
            let filled = self.fill(&mut buffers, item_len, start);
            let batch = Batch {
                buffers,
                free: Arc::clone(&self.free),
            };
            let msg = filled.map(|()| batch);
            let failed = msg.is_err();
            if tx.send(msg).is_err() || failed {
                return;
            }
        }
    }

    /// Fill `buffers` for its `indices`, the first of which is at position `start` of the
    /// epoch (positions past the order's length are the padding's second pass).
    fn fill(
        &self,
        buffers: &mut Buffers,
        item_len: usize,
        start: usize,
    ) -> Result<(), LoaderError> {
        let n = self.order.len().max(1);
        for (slot, &index) in buffers.indices.iter().enumerate() {
            let pass = (start + slot) / n;
            let dst = &mut buffers.data[slot * item_len..(slot + 1) * item_len];
            let sample = self.set.sample(index)?;
            match self.cfg.crop {
                None => sample.values.copy_to_f32(dst),
                Some(crop) => {
                    let shape = [sample.shape[0], sample.shape[1], sample.shape[2]];
                    // The first pass keeps the plain (seed, epoch, sample) key; a padded repeat
                    // mixes its pass in, so it is cropped anew.
                    let seed = match pass {
                        0 => self.cfg.seed,
                        p => mix(self.cfg.seed, p as u64, u64::MAX),
                    };
                    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, self.epoch, index as u64));
                    let origin = crop_origin(shape, crop, &mut rng);
                    let pad = self.cfg.pad_value;
                    match sample.values {
                        SampleValues::F32(v) => crop_into(shape, v, origin, crop, pad, dst),
                        SampleValues::F16(v) => crop_into(shape, v, origin, crop, pad, dst),
                    }
                    .map_err(|source| LoaderError::Crop { index, source })?;
                }
            }
        }
        Ok(())
    }
}

/// The batches of one epoch, in order.
#[derive(Debug)]
pub struct Epoch {
    receivers: Vec<Receiver<Result<Batch, LoaderError>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    n_batches: usize,
    failure: Option<LoaderError>,
}

impl Epoch {
    fn failed(err: LoaderError, stop: Arc<AtomicBool>, handles: Vec<JoinHandle<()>>) -> Self {
        Epoch {
            receivers: Vec::new(),
            handles,
            stop,
            next: 0,
            n_batches: 1,
            failure: Some(err),
        }
    }

    /// Batches this epoch yields in total.
    pub fn batches(&self) -> usize {
        self.n_batches
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(err) = self.failure.take() {
            self.next = self.n_batches;
            return Some(Err(err));
        }
        if self.next >= self.n_batches || self.receivers.is_empty() {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        match self.receivers[w].recv() {
            Ok(Ok(batch)) => Some(Ok(batch)),
            Ok(Err(e)) => {
                self.next = self.n_batches;
                Some(Err(e))
            }
            // the worker ended without sending this batch: it panicked
            Err(_) => {
                self.next = self.n_batches;
                Some(Err(LoaderError::WorkerDied(w)))
            }
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // dropping the receivers makes any blocked `send` fail, so workers exit promptly
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
