//! medvae-runtime: devices, tensors, memory, op dispatch and IO.
//!
//! * [`Device`] / [`Tensor`] / [`DType`]: the data model (channels-last activations, f32
//!   compute, f16/bf16 storage);
//! * [`memory`]: the caching buffer pool and its peak-bytes counter;
//! * [`golden`]: reference-case files; [`layout`]: PyTorch <-> channels-last conversion;
//! * [`hash`]: the FNV-1a content hash (checksums, fingerprints);
//! * [`checkpoint`]: PyTorch `.ckpt`/`.bin` (safe unpickler) and safetensors IO;
//! * [`data`]: the data pipeline (preprocessing, shards, streaming loader);
//! * `cuda`: the CUDA device layer (feature `cuda`, loaded dynamically at run time).

pub mod checkpoint;
pub mod collective;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
mod device;
mod dtype;
mod error;
pub mod golden;
pub mod hash;
pub mod layout;
pub mod memory;
pub mod memory_trace;
mod tensor;
#[cfg(feature = "cuda")]
mod tensor_cuda;

pub use device::{set_cuda_precision, Device};
pub use dtype::DType;
pub use error::{Result, RuntimeError};
pub use tensor::{Storage, Tensor};
pub mod ops;
