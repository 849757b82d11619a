use medvae_kernels::KernelError;
use thiserror::Error;

/// Errors of the runtime: every variant names what was being done and with which shapes/files.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: String, detail: String },
    #[error("{op}: unsupported dtype {dtype} (expected {expected})")]
    DType {
        op: String,
        dtype: String,
        expected: String,
    },
    #[error("{op}: tensor is on {device}, expected {expected}")]
    WrongDevice {
        op: String,
        device: String,
        expected: String,
    },
    #[error("CUDA not available: {0}")]
    CudaUnavailable(String),
    /// A CUDA operation failed (driver, kernel geometry, out of memory).
    #[error("{op} on CUDA: {msg}")]
    Cuda { op: String, msg: String },
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

impl RuntimeError {
    pub fn shape(op: impl Into<String>, detail: impl Into<String>) -> Self {
        RuntimeError::Shape {
            op: op.into(),
            detail: detail.into(),
        }
    }
    pub fn file(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        RuntimeError::File {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }
}
