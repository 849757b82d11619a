use thiserror::Error;

/// Compiling a CUDA source failed, or could not be attempted.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CompileError {
    /// The NVRTC library could not be loaded (not installed / not on the library path).
    #[error("NVRTC not available: {0}")]
    Unavailable(String),
    /// An architecture string that is not `sm_XX`, `compute_XX` or `XX`.
    #[error("bad GPU architecture `{0}`: expected sm_XX, compute_XX or XX (e.g. sm_90)")]
    BadArch(String),
    /// NVRTC rejected the source; `log` is its compile log.
    #[error("{module} ({arch}): NVRTC compilation failed:\n{log}")]
    Compile {
        module: String,
        arch: String,
        log: String,
    },
    /// Any other NVRTC call failed.
    #[error("NVRTC {call} failed: {message}")]
    Nvrtc { call: &'static str, message: String },
}
