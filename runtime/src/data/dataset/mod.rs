//! Datasets: what a YAML config names (a CSV of image ids with a split column, a folder and a
//! file suffix, and how to decode the files), reading those CSVs, and [`prepare`]: decoding
//! every file once into memory-mappable shards per split (see [`crate::data::shard`]).
//!
//! A config may list several datasets (say one MRI and one CT set); their samples are
//! concatenated per split in the order listed, each decoded by its own kind's loader. Relative
//! `csv` / `data_dir` paths are taken as given (relative to the working directory): resolving
//! them against the config file's folder is the config loader's job.
//!
//! Bad input (unreadable, corrupt, NaN, 4D, a constant image…) is an error naming the file, or a
//! reported skip with `skip_bad`; `prepare` refuses constant 2D images although the library
//! loader maps them to −1 as the reference does (see the `prepare` module docs and docs/DATA.md).

mod entries;
mod error;
mod prepare;
pub mod split;

pub use entries::{read_entries, DatasetEntry};
pub use error::{DatasetError, PrepareError, SampleError};
pub use prepare::{
    decode_sample, prepare, DecodedSample, PrepareOptions, PrepareReport, Progress, SkippedFile,
    SplitSummary, REPORT_FILE,
};
pub use split::{assign_splits, group_of, split_csv, SplitPlan};

use std::path::PathBuf;

/// One dataset of a config (serde-deserialisable from YAML/JSON; unknown keys are errors).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// The CSV listing the images.
    pub csv: PathBuf,
    /// The folder the image ids are relative to: a file is `data_dir / (id + suffix)`.
    pub data_dir: PathBuf,
    /// Appended to each id (e.g. `.png`, `.nii.gz`); empty by default.
    #[serde(default)]
    pub suffix: String,
    /// Column holding the image id.
    #[serde(default = "default_image_column")]
    pub image_column: String,
    /// Column holding the split (`train`, `val`/`valid`/`validation`, `test`).
    #[serde(default = "default_split_column")]
    pub split_column: String,
    /// How to decode and preprocess the files.
    pub kind: DataKind,
    /// 2D only: average the channels into one (the reference finetuning default).
    #[serde(default = "default_true")]
    pub merge_channels: bool,
    /// 2D only: resize to `[h, w]` (the reference finetunes at 384 × 384); `null` keeps sizes.
    #[serde(default = "default_resize")]
    pub resize_to: Option<[usize; 2]>,
}

fn default_image_column() -> String {
    "image_uuid".into()
}
fn default_split_column() -> String {
    "split".into()
}
fn default_true() -> bool {
    true
}
fn default_resize() -> Option<[usize; 2]> {
    Some([384, 384])
}

impl DatasetSpec {
    /// A spec with the reference defaults for everything but the paths and kind.
    pub fn new(csv: impl Into<PathBuf>, data_dir: impl Into<PathBuf>, kind: DataKind) -> Self {
        DatasetSpec {
            csv: csv.into(),
            data_dir: data_dir.into(),
            suffix: String::new(),
            image_column: default_image_column(),
            split_column: default_split_column(),
            kind,
            merge_channels: true,
            resize_to: default_resize(),
        }
    }
}

/// What the files of a dataset are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// PNG images (X-ray, mammography, slices): the reference `load_2d_finetune`.
    Png2d,
    /// NIfTI MRI volumes: RAS, min-max.
    Mri3d,
    /// NIfTI CT volumes: RAS, HU window [-1000, 1000].
    Ct3d,
}

impl DataKind {
    pub fn is_3d(self) -> bool {
        !matches!(self, DataKind::Png2d)
    }
}

/// A dataset split.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The name used in shard and index file names.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parse a CSV split value (case-insensitive, surrounding spaces ignored).
    pub fn parse(value: &str) -> Option<Split> {
        match value.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(Split::Train),
            "val" | "valid" | "validation" => Some(Split::Val),
            "test" | "testing" => Some(Split::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
