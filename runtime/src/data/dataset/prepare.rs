//! `prepare`: decode every file of the datasets once (in parallel, on `workers` threads), apply
//! the reference preprocessing, and write the samples into shards per split, in a stable order
//! (datasets in the order given, rows in CSV order) whatever the worker count.
//!
//! What is stored per sample: 2D, the reference `load_2d_finetune` output (`[H, W, C]`); 3D, the
//! whole RAS volume after the modality's intensity rule (`[D, H, W, 1]`), so the loader can take
//! a fresh random 64³ crop each epoch, as the reference does per `__getitem__`.
//!
//! Bad files (unreadable, corrupt, NaN, a constant image, wrong dimensions…) stop the run with
//! an error naming the file, or with `skip_bad` are counted and listed in the report.
//!
//! Constant images: min-max normalisation is undefined when every pixel is equal. The library
//! loaders keep the reference behaviour for 2D (`load_2d` maps a constant channel to −1, as
//! MONAI's guard does, so the golden tests hold) and refuse a constant MRI volume; `prepare`
//! refuses both: a 2D image whose pixels are all equal (every channel constant, checked on the
//! decoded values before resizing) is [`SampleError::ConstantImage`], a constant MRI volume
//! `VolumeError::Constant`. A constant channel beside varying ones (an opaque alpha channel) is
//! accepted and becomes −1 as in the reference. A constant CT volume is accepted: the fixed HU
//! window is defined for it. Either way
//! every split's index is written only once all its shards are in place, and indexes of an
//! earlier run in the same folder are removed first, so a failed run never leaves a usable-looking
//! mix behind.

use super::entries::{read_entries, DatasetEntry};
use super::error::{PrepareError, SampleError};
use super::{DataKind, DatasetSpec, Split};
use crate::data::image2d::{load_png, preprocess_2d, Image2d, Preprocess2d};
use crate::data::shard::{index_path, write_json_atomically, ShardDtype, SplitWriter};
use crate::data::volume3d::{load_volume, Modality};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Name of the JSON report written into the output folder.
pub const REPORT_FILE: &str = "prepare_report.json";

/// How to prepare.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepareOptions {
    pub out_dir: PathBuf,
    /// Decode threads; 0 means one per available core.
    pub workers: usize,
    pub dtype: ShardDtype,
    /// Skip (and report) bad files instead of stopping at the first.
    pub skip_bad: bool,
    /// Sample alignment in the shards (64 or 4096).
    pub alignment: usize,
    /// A new shard starts once the current one holds this many bytes.
    pub max_shard_bytes: u64,
}

impl PrepareOptions {
    /// f16 shards, 64-byte alignment, 1 GiB shards, all cores, stop on bad input.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        PrepareOptions {
            out_dir: out_dir.into(),
            workers: 0,
            dtype: ShardDtype::F16,
            skip_bad: false,
            alignment: 64,
            max_shard_bytes: 1 << 30,
        }
    }
}

/// Reported after each file (in output order).
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub done: usize,
    pub total: usize,
    pub path: &'a Path,
    /// `Some(reason)` when the file was skipped.
    pub skipped: Option<&'a SampleError>,
}

/// A file left out under `skip_bad`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SkippedFile {
    pub path: PathBuf,
    pub dataset: usize,
    pub split: Split,
    /// Line of the file's row in its dataset's CSV.
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitSummary {
    pub samples: usize,
    pub shards: usize,
    pub bytes: u64,
}

/// What `prepare` did (also written as `prepare_report.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrepareReport {
    pub out_dir: PathBuf,
    pub dtype: ShardDtype,
    /// Files listed by the CSVs.
    pub files: usize,
    /// Samples written (all splits).
    pub written: usize,
    pub splits: BTreeMap<Split, SplitSummary>,
    pub skipped: Vec<SkippedFile>,
    pub seconds: f64,
}

/// One decoded sample, channels-last.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSample {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Decode and preprocess one file as `spec` says.
pub fn decode_sample(path: &Path, spec: &DatasetSpec) -> Result<DecodedSample, SampleError> {
    let volume = |modality| -> Result<DecodedSample, SampleError> {
        let v = load_volume(path, modality)?;
        Ok(DecodedSample {
            shape: vec![v.shape[0], v.shape[1], v.shape[2], 1],
            data: v.data,
        })
    };
    match spec.kind {
        DataKind::Mri3d => volume(Modality::Mri),
        DataKind::Ct3d => volume(Modality::Ct),
        DataKind::Png2d => {
            let p = Preprocess2d {
                resize_to: spec.resize_to,
                merge_channels: spec.merge_channels,
            };
            let decoded = load_png(path)?;
            if let Some(pixel) = constant_pixel(&decoded) {
                return Err(SampleError::ConstantImage {
                    path: path.to_path_buf(),
                    pixel,
                });
            }
            let img = preprocess_2d(&decoded, &p, path)?;
            Ok(DecodedSample {
                shape: vec![img.height, img.width, img.channels],
                data: img.data,
            })
        }
    }
}

/// `Some(pixel)` when every pixel of `img` equals `pixel` (each channel constant): the
/// definition of a constant image that `prepare` refuses. A constant channel next to varying
/// ones (an opaque alpha channel, say) is accepted and becomes −1, as in the reference.
fn constant_pixel(img: &Image2d) -> Option<Vec<f32>> {
    let c = img.channels.max(1);
    let mut pixels = img.data.chunks_exact(c);
    let first = pixels.next()?;
    pixels.all(|p| p == first).then(|| first.to_vec())
}

struct Job<'a> {
    dataset: usize,
    spec: &'a DatasetSpec,
    entry: DatasetEntry,
}

/// Prepare shards for `specs` into `opts.out_dir` (see the module docs). `progress` is called
/// once per file, in order, from the calling thread.
pub fn prepare(
    specs: &[DatasetSpec],
    opts: &PrepareOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<PrepareReport, PrepareError> {
    let started = Instant::now();
    check_kinds(specs)?;
    let mut jobs = Vec::new();
    for (dataset, spec) in specs.iter().enumerate() {
        for entry in read_entries(spec)? {
            jobs.push(Job {
                dataset,
                spec,
                entry,
            });
        }
    }

    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(|e| PrepareError::Output {
        path: out.clone(),
        msg: format!("cannot create: {e}"),
    })?;
    for split in Split::ALL {
        let stale = index_path(out, split.name());
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(PrepareError::Output {
                    path: stale,
                    msg: format!("cannot remove the index of an earlier run: {e}"),
                })
            }
        }
    }
    let mut writers = BTreeMap::new();
    for split in Split::ALL {
        writers.insert(
            split,
            SplitWriter::create(
                out,
                split.name(),
                opts.dtype,
                opts.alignment,
                opts.max_shard_bytes,
            )?,
        );
    }

    let workers = if opts.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.workers
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("medvae-prepare-{i}"))
        .build()
        .map_err(|e| PrepareError::Workers {
            workers,
            msg: e.to_string(),
        })?;

    // Decode a bounded chunk in parallel, then write it in order: memory stays at about
    // `2 × workers` decoded samples and the output order does not depend on scheduling.
    let total = jobs.len();
    let mut done = 0usize;
    let mut skipped = Vec::new();
    for chunk in jobs.chunks(workers * 2) {
        let decoded: Vec<Result<DecodedSample, SampleError>> = pool.install(|| {
            chunk
                .par_iter()
                .map(|j| decode_sample(&j.entry.path, j.spec))
                .collect()
        });
        for (job, result) in chunk.iter().zip(decoded) {
            done += 1;
            match result {
                Ok(sample) => {
                    let writer =
                        writers
                            .get_mut(&job.entry.split)
                            .ok_or_else(|| PrepareError::Output {
                                path: out.clone(),
                                msg: format!("no writer for split {}", job.entry.split),
                            })?;
                    let source = job.entry.path.to_string_lossy();
                    writer.append(&sample.shape, &sample.data, &source, job.dataset)?;
                    progress(&Progress {
                        done,
                        total,
                        path: &job.entry.path,
                        skipped: None,
                    });
                }
                Err(err) if opts.skip_bad => {
                    progress(&Progress {
                        done,
                        total,
                        path: &job.entry.path,
                        skipped: Some(&err),
                    });
                    skipped.push(SkippedFile {
                        path: job.entry.path.clone(),
                        dataset: job.dataset,
                        split: job.entry.split,
                        line: job.entry.line,
                        reason: err.to_string(),
                    });
                }
                Err(err) => {
                    return Err(PrepareError::BadFile {
                        dataset: job.dataset,
                        split: job.entry.split,
                        source: err,
                    })
                }
            }
        }
    }

    let mut splits = BTreeMap::new();
    let mut written = 0;
    for (split, writer) in writers {
        let index = writer.finish()?;
        written += index.samples.len();
        splits.insert(
            split,
            SplitSummary {
                samples: index.samples.len(),
                shards: index.shards.len(),
                bytes: index.shards.iter().map(|s| s.bytes).sum(),
            },
        );
    }
    let report = PrepareReport {
        out_dir: out.clone(),
        dtype: opts.dtype,
        files: total,
        written,
        splits,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json_atomically(&out.join(REPORT_FILE), &report)?;
    Ok(report)
}

/// All datasets must be 2D, or all 3D: one shard set feeds one model.
fn check_kinds(specs: &[DatasetSpec]) -> Result<(), PrepareError> {
    let first = specs.first().ok_or(PrepareError::NoDatasets)?;
    for (i, spec) in specs.iter().enumerate().skip(1) {
        if spec.kind.is_3d() != first.kind.is_3d() {
            return Err(PrepareError::MixedKinds {
                first: 0,
                first_kind: first.kind,
                other: i,
                other_kind: spec.kind,
            });
        }
    }
    Ok(())
}
