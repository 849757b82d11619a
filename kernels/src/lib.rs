//! medvae-kernels: every compute kernel of medvae-fast.
//!
//! * [`cpu`]: native kernels on slices, generic over [`Real`] (f32 for production, f64 so that
//!   finite-difference gradient checks are exact enough to mean something).
//! * [`cuda`]: the CUDA C sources in `kernels/cuda/*.cu`, embedded at build time and compiled at
//!   run time by NVRTC (the launch glue lives in the runtime, which owns devices and streams).
//!
//! Conventions shared by every CPU kernel:
//! * Activations are **channels-last**: `[N, D, H, W, C]`, with 2D data as `D = 1`. Spatial
//!   extents are given as `[d, h, w]` ([`Spatial`]).
//! * Convolution weights are stored tap-major, `[kd, kh, kw, Cin, Cout]`, so that each kernel tap
//!   is a plain `Cin × Cout` GEMM operand (PyTorch's `(O, I, kd, kh, kw)` is converted on load).
//! * Kernels validate slice lengths against the geometry they are given and return
//!   [`KernelError`] instead of panicking; they never allocate per call beyond scratch space.
//! * Backward kernels *overwrite* the input gradient and *accumulate* (`+=`) parameter
//!   gradients, so gradient accumulation across micro-batches is free.

pub mod cpu;
pub mod cuda;
pub mod error;
mod real;

pub use error::KernelError;
pub use real::Real;

/// Spatial extent `[d, h, w]`; 2D tensors use `d = 1`.
pub type Spatial = [usize; 3];

/// Product of a spatial extent.
pub fn volume(s: Spatial) -> usize {
    s[0] * s[1] * s[2]
}
