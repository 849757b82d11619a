//! Errors of dataset reading and `prepare`; each names the file and the problem.

use crate::data::image2d::Image2dError;
use crate::data::shard::ShardError;
use crate::data::volume3d::VolumeError;
use std::path::PathBuf;
use thiserror::Error;

/// A problem with a dataset's CSV (always fatal: it is configuration, not data).
#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("{}: cannot read CSV: {msg}", path.display())]
    Csv { path: PathBuf, msg: String },
    #[error("{}: no column {column:?} (columns: {})", path.display(), available.join(", "))]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: Vec<String>,
    },
    #[error("{}: line {line}: split {value:?} is not train, val (valid, validation) or test", path.display())]
    BadSplit {
        path: PathBuf,
        line: u64,
        value: String,
    },
    #[error("{}: line {line}: empty image id", path.display())]
    EmptyId { path: PathBuf, line: u64 },
}

/// Why one file could not become a sample (skippable with `skip_bad`).
#[derive(Debug, Error)]
pub enum SampleError {
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Image(#[from] Image2dError),
    /// A 2D image whose pixels are all equal. The library loader maps it to all −1, as the
    /// reference does; `prepare` refuses it, as it refuses a constant MRI volume, because a
    /// blank training sample is almost always a broken export.
    #[error(
        "{}: constant image (every pixel is {pixel:?}): min-max normalisation is undefined (the reference would return an all -1 image)",
        path.display()
    )]
    ConstantImage {
        path: PathBuf,
        /// The decoded value of every pixel, per channel (8-bit samples as value / 255).
        pixel: Vec<f32>,
    },
}

/// Why `prepare` stopped.
#[derive(Debug, Error)]
pub enum PrepareError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(
        "bad input (dataset {dataset}, {split}): {source} (use --skip-bad to skip such files)"
    )]
    BadFile {
        dataset: usize,
        split: crate::data::dataset::Split,
        #[source]
        source: SampleError,
    },
    #[error("cannot mix 2D and 3D datasets in one prepared set (dataset {first} is {first_kind:?}, dataset {other} is {other_kind:?})")]
    MixedKinds {
        first: usize,
        first_kind: crate::data::dataset::DataKind,
        other: usize,
        other_kind: crate::data::dataset::DataKind,
    },
    #[error("no datasets given")]
    NoDatasets,
    #[error("{}: {msg}", path.display())]
    Output { path: PathBuf, msg: String },
    #[error("cannot start {workers} decode workers: {msg}")]
    Workers { workers: usize, msg: String },
}
