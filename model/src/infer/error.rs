use medvae_runtime::checkpoint::CheckpointError;
use medvae_runtime::data::image2d::Image2dError;
use medvae_runtime::data::volume3d::VolumeError;
use medvae_runtime::RuntimeError;
use std::path::PathBuf;
use thiserror::Error;

/// Why inference could not be set up, or why one file failed.
#[derive(Debug, Error)]
pub enum InferError {
    /// The options do not describe a usable model (unknown name, conflicting flags, ...).
    #[error("{0}")]
    Setup(String),
    /// The weights file cannot be used with the model.
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
    /// An input file this model cannot take.
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },
    /// Sliding-window geometry that cannot be stitched.
    #[error("sliding window: {0}")]
    Window(String),
    #[error(transparent)]
    Image(#[from] Image2dError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}
