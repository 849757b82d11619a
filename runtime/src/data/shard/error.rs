//! Errors of shard writing and reading; each names the file.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ShardError {
    #[error("{}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: truncated shard: {actual} bytes, the header says {expected}", path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{}: corrupt shard: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    #[error("{}: bad shard index: {msg}", path.display())]
    Index { path: PathBuf, msg: String },
    #[error("{}: cannot append sample: {msg}", path.display())]
    Sample { path: PathBuf, msg: String },
    #[error("{}: sample {index} out of range ({len} samples)", path.display())]
    OutOfRange {
        path: PathBuf,
        index: usize,
        len: usize,
    },
}

impl ShardError {
    pub(crate) fn io(path: &std::path::Path, op: &'static str, source: std::io::Error) -> Self {
        ShardError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
    pub(crate) fn corrupt(path: &std::path::Path, msg: impl Into<String>) -> Self {
        ShardError::Corrupt {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
