//! Errors of NIfTI reading and 3D preprocessing. Every variant names the file, so a bad volume
//! in a list of thousands can be found (and, with `--skip-bad`, reported as a counted skip).

use std::path::PathBuf;
use thiserror::Error;

/// Why a volume could not be read or preprocessed.
#[derive(Debug, Error)]
pub enum VolumeError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: corrupt or truncated gzip stream: {msg}", path.display())]
    Gzip { path: PathBuf, msg: String },
    #[error("{}: not a readable NIfTI file: {msg}", path.display())]
    Header { path: PathBuf, msg: String },
    #[error(
        "{}: truncated: voxel data needs {needed} bytes from offset {offset}, the file has {available}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{}: unsupported NIfTI datatype {code} ({name})", path.display())]
    Datatype {
        path: PathBuf,
        code: i16,
        name: &'static str,
    },
    #[error(
        "{}: unsupported dimensions {dims:?}: expected a 3D volume (extra dimensions of size 1 are accepted)",
        path.display()
    )]
    Dims { path: PathBuf, dims: Vec<usize> },
    #[error("{}: voxel (i={}, j={}, k={}) is {value}: NaN/Inf voxels are not accepted", path.display(), voxel[0], voxel[1], voxel[2])]
    NonFinite {
        path: PathBuf,
        /// Index in the file's own (i, j, k) voxel order.
        voxel: [usize; 3],
        value: f64,
    },
    #[error(
        "{}: constant volume (every voxel is {value}): min-max normalisation is undefined (the reference would return an all -1 image)",
        path.display()
    )]
    Constant { path: PathBuf, value: f32 },
    #[error("{}: no foreground voxel (value > 0 after normalisation): CropForeground would return an empty volume", path.display())]
    NoForeground { path: PathBuf },
    #[error("{}: orientation: {msg}", path.display())]
    Affine { path: PathBuf, msg: String },
    #[error("{}: volume layout: {msg}", path.display())]
    Layout { path: PathBuf, msg: String },
}

impl VolumeError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            VolumeError::Io { path, .. }
            | VolumeError::Gzip { path, .. }
            | VolumeError::Header { path, .. }
            | VolumeError::Truncated { path, .. }
            | VolumeError::Datatype { path, .. }
            | VolumeError::Dims { path, .. }
            | VolumeError::NonFinite { path, .. }
            | VolumeError::Constant { path, .. }
            | VolumeError::NoForeground { path }
            | VolumeError::Affine { path, .. }
            | VolumeError::Layout { path, .. } => path,
        }
    }
}
