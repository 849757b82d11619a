//! The CUDA device layer (feature `cuda`): driver probing, devices, memory, kernel modules and
//! typed launchers for every CUDA kernel of `medvae_kernels::cuda`.
//!
//! Everything is loaded at run time (cudarc, dynamic loading): a binary built here runs on a
//! machine without a driver and reports [`CudaError::NotAvailable`] when CUDA is asked for.
//! [`probe`] checks for the driver library before making any driver call.
//!
//! * [`CudaDevice`]: context + one stream + a caching allocator ([`DeviceBuffer`],
//!   [`MemStats`]) + pinned host buffers + lazily loaded kernels;
//! * [`module`]: NVRTC compilation with the on-disk image cache (`MEDVAE_PTX_CACHE`);
//! * [`ops`]: typed launchers (conv, GEMM/linear, norms, attention, elementwise, losses, Adam,
//!   ...), which validate lengths like the CPU kernels and mirror their semantics for parity.

mod alloc;
mod device;
mod error;
pub mod module;
pub mod ops;
mod peer;
pub mod profile;
pub mod registry;

pub use alloc::{bucket_size, DeviceBuffer, MemStats, PinnedBuffer};
pub use device::CudaDevice;
pub use error::{CudaError, CudaResult};

use cudarc::driver::sys::CUdevice_attribute_enum as Attr;
use cudarc::driver::{result, sys};

/// One device as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub total_memory: usize,
    pub multiprocessors: u32,
    /// Largest dynamic shared memory a block may opt into.
    pub max_shared_per_block_optin: usize,
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    /// e.g. 12040 for CUDA 12.4.
    pub driver_version: i32,
    pub devices: Vec<DeviceInfo>,
}

/// Find the driver and list the devices. Never panics: without `libcuda` (or with no device) it
/// returns [`CudaError::NotAvailable`] saying why.
pub fn probe() -> CudaResult<CudaInfo> {
    // SAFETY: only attempts to dlopen the driver library; no driver call is made before it
    // reports success.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::NotAvailable(
            "the NVIDIA driver library (libcuda.so) was not found on this machine".into(),
        ));
    }
    // A driver too old for a symbol cudarc resolves would panic inside cudarc: turn that into
    // an error too.
    std::panic::catch_unwind(probe_driver).unwrap_or_else(|_| {
        Err(CudaError::NotAvailable(
            "the NVIDIA driver could not be used".into(),
        ))
    })
}

fn probe_driver() -> CudaResult<CudaInfo> {
    result::init().map_err(|e| CudaError::NotAvailable(format!("cuInit failed: {e}")))?;
    let mut driver_version = 0;
    // SAFETY: valid out-pointer; the driver is initialised.
    unsafe { sys::cuDriverGetVersion(&mut driver_version) }.result()?;
    let count = result::device::get_count()?;
    if count <= 0 {
        return Err(CudaError::NotAvailable(
            "the driver reports no CUDA device".into(),
        ));
    }
    let mut devices = Vec::new();
    for ordinal in 0..count {
        let dev = result::device::get(ordinal)?;
        // SAFETY: dev is a valid device handle.
        let attr = |a: Attr| unsafe { result::device::get_attribute(dev, a) };
        devices.push(DeviceInfo {
            ordinal: ordinal as usize,
            name: result::device::get_name(dev)?,
            compute_capability: (
                attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32,
                attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32,
            ),
            // SAFETY: as above.
            total_memory: unsafe { result::device::total_mem(dev) }?,
            multiprocessors: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
            max_shared_per_block_optin: attr(
                Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )? as usize,
        });
    }
    Ok(CudaInfo {
        driver_version,
        devices,
    })
}
