use medvae_kernels::KernelError;
use std::path::PathBuf;
use thiserror::Error;

/// Why a 2D image could not be loaded or preprocessed. Every variant names the file.
#[derive(Debug, Error)]
pub enum Image2dError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not start with the PNG signature and IHDR chunk.
    #[error("{path} is not a PNG file: {reason}")]
    NotPng { path: PathBuf, reason: &'static str },
    /// The PNG data is corrupt or truncated.
    #[error("cannot decode PNG {path}: {source}")]
    Decode {
        path: PathBuf,
        source: image::ImageError,
    },
    /// A valid PNG that the reference pipeline cannot be reproduced for.
    #[error("unsupported PNG {path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    /// The image's extent or buffer does not fit what is asked of it.
    #[error("bad image geometry for {path}: {msg}")]
    Geometry { path: PathBuf, msg: String },
    /// The resize kernel refused the geometry.
    #[error("cannot resize {path}: {source}")]
    Resize { path: PathBuf, source: KernelError },
    /// A NaN or infinity appeared (the reference would pass it on silently).
    #[error("{path}: non-finite value in the {stage}")]
    NonFinite { path: PathBuf, stage: &'static str },
}
