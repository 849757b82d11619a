//! The process-wide CUDA devices that tensors live on, and the precision their convolutions
//! and matrix products use.
//!
//! A [`crate::Tensor`] on `cuda:N` holds a buffer of device N's pool; every op on it queues on
//! that device's one stream. Devices are opened on first use and kept for the life of the
//! process (their pools cache freed blocks; see [`CudaDevice::empty_cache`]).

use super::ops::conv::ConvPrecision;
use super::{CudaDevice, CudaResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

fn devices() -> &'static Mutex<HashMap<usize, Arc<CudaDevice>>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Device `ordinal`, opened on first use. Errors (never panics) without a driver or device.
pub fn device(ordinal: usize) -> CudaResult<Arc<CudaDevice>> {
    // A poisoned lock only means another thread panicked while opening a device; the map
    // itself is still consistent.
    let mut map = devices().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = map.get(&ordinal) {
        return Ok(Arc::clone(d));
    }
    let d = Arc::new(CudaDevice::new(ordinal)?);
    map.insert(ordinal, Arc::clone(&d));
    Ok(d)
}

// Precision of tensor-level convolutions and linear layers on CUDA. Fp32 (direct kernels) by
// default, so that `verify --device cuda` compares like with like; training and benchmarks
// opt into TF32 or BF16 tensor cores.
static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Set the precision of every later convolution and linear layer on CUDA.
pub fn set_precision(p: ConvPrecision) {
    let v = match p {
        ConvPrecision::Fp32 => 0,
        ConvPrecision::Tf32 => 1,
        ConvPrecision::Bf16 => 2,
    };
    PRECISION.store(v, Ordering::Relaxed);
}

/// The precision set by [`set_precision`].
pub fn precision() -> ConvPrecision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => ConvPrecision::Tf32,
        2 => ConvPrecision::Bf16,
        _ => ConvPrecision::Fp32,
    }
}
