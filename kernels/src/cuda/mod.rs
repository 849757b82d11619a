//! CUDA C kernel sources (`kernels/cuda/*.cu`), embedded at build time and compiled at run
//! time by NVRTC.
//!
//! * [`registry`]: every source with its entry points, and the headers they include (passed to
//!   NVRTC in memory, so no include path is needed);
//! * [`arch`]: GPU architectures, NVRTC options and the compiled-image cache key
//!   (`<sha256 of source+headers+options>-<arch>.<ptx|cubin>`);
//! * `nvrtc` (feature `cuda`): the NVRTC call itself, loaded dynamically — compiling needs the
//!   NVRTC library but no GPU and no driver.
//!
//! Launch glue (devices, streams, memory, argument packing) lives in the runtime
//! (`medvae_runtime::cuda`). The sources also build on the CPU under `kernels/cuda/emu/`, a
//! fiber-based emulator used to check their logic without a GPU.

pub mod arch;
mod error;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod registry;

pub use arch::{Arch, Target};
pub use error::CompileError;
pub use registry::{KernelHeader, KernelSource, HEADERS, SOURCES};
