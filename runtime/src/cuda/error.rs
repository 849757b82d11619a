use medvae_kernels::cuda::CompileError;
use medvae_kernels::KernelError;
use std::path::PathBuf;
use thiserror::Error;

/// Anything the CUDA layer can fail with. None of these is a panic: a machine without a driver
/// gets [`CudaError::NotAvailable`].
#[derive(Debug, Error)]
pub enum CudaError {
    /// No usable driver or device (the reason says which).
    #[error("CUDA not available: {0}")]
    NotAvailable(String),
    /// The device has no room for a block even after the pool's cache was freed.
    #[error(
        "out of GPU memory: {requested} more bytes needed with {in_use} bytes already in use \
         (lower the batch size or the crop/roi size)"
    )]
    OutOfMemory { requested: usize, in_use: usize },
    /// A driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// NVRTC could not compile (or was not found for) a kernel module.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Arguments that do not fit the kernel's geometry (lengths, limits).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The on-disk kernel image cache could not be read.
    #[error("kernel cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An entry point that no registered module defines.
    #[error("unknown CUDA kernel `{0}`")]
    UnknownKernel(String),
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}

pub type CudaResult<T> = std::result::Result<T, CudaError>;

/// A geometry error of a launcher.
pub(crate) fn geometry(kernel: &'static str, msg: impl Into<String>) -> CudaError {
    CudaError::Kernel(KernelError::Geometry {
        kernel,
        msg: msg.into(),
    })
}
