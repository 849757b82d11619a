//! The op API: tensor-level forward and backward functions with shape checks and device
//! dispatch. Each file wraps one kernel family of `medvae-kernels`; layers in `medvae-model`
//! are built from these.
//!
//! Shapes are channels-last: `[N, H, W, C]` (2D) or `[N, D, H, W, C]` (3D).

pub mod activation;
pub mod attention;
pub mod conv;
pub mod conv_frozen;
pub mod cpu_profile;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod perceptual;
pub mod reduce;
pub mod resample;
pub mod slices;
pub mod softmax;
pub mod strided;

#[cfg(feature = "cuda")]
mod on_cuda;

use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use crate::Device;
use medvae_kernels::Spatial;

/// Split a channels-last activation shape into (batch, [d, h, w], channels).
pub fn split_nsc(op: &str, shape: &[usize]) -> Result<(usize, Spatial, usize)> {
    match *shape {
        [n, h, w, c] => Ok((n, [1, h, w], c)),
        [n, d, h, w, c] => Ok((n, [d, h, w], c)),
        _ => Err(RuntimeError::shape(
            op,
            format!(
                "expected a channels-last [N, H, W, C] or [N, D, H, W, C] tensor, got {shape:?}"
            ),
        )),
    }
}

/// Rebuild a channels-last shape of the same rank as `like` (rank 4 drops `d`).
pub fn join_nsc(rank: usize, n: usize, s: Spatial, c: usize) -> Vec<usize> {
    if rank == 4 {
        vec![n, s[1], s[2], c]
    } else {
        vec![n, s[0], s[1], s[2], c]
    }
}

/// All operands must be on one device; returns it. CUDA dispatch is wired per op as its
/// kernels land; until then a CUDA tensor gets a clear error, never a silent CPU fallback.
pub fn common_device(op: &str, tensors: &[&Tensor]) -> Result<Device> {
    let dev = tensors.first().map(|t| t.device()).unwrap_or(Device::Cpu);
    for t in tensors {
        t.expect_device(op, dev)?;
    }
    Ok(dev)
}

/// The check that opens an op's CPU path: an error for any other device (an op without a
/// kernel there). On the CPU it returns the op's timer ([`cpu_profile`]), which the op binds,
/// so the time until it returns is counted under `op` when `MEDVAE_CPU_PROFILE` is set.
pub(crate) fn cpu_only(op: &'static str, dev: Device) -> Result<cpu_profile::OpTimer> {
    cpu_check(op, dev)?;
    Ok(cpu_profile::OpTimer::start(op))
}

/// [`cpu_only`] without the timer, for helpers that are not an op of their own.
pub(crate) fn cpu_check(op: &str, dev: Device) -> Result<()> {
    if dev.is_cpu() {
        Ok(())
    } else {
        Err(RuntimeError::Other(format!(
            "{op}: no kernel for {dev} in this build"
        )))
    }
}
