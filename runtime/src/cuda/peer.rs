//! Copies between two devices' memory (peer-to-peer), for the all-reduce of data-parallel
//! training without NCCL.
//!
//! `cuMemcpyPeerAsync` copies between any two contexts: with peer access enabled it goes
//! straight over NVLink or PCIe, without it the driver stages through host memory. Between
//! buffers of one device it is a plain device-to-device copy.

use super::error::{CudaError, CudaResult};
use super::{CudaDevice, DeviceBuffer};
use cudarc::driver::sys;

impl CudaDevice {
    /// Let this device's kernels and copies read `peer`'s memory directly. Returns whether the
    /// pair can (`false`: copies will be staged by the driver, slower but correct). Enabling a
    /// pair twice is not an error; a device is its own peer.
    pub fn enable_peer_access(&self, peer: &CudaDevice) -> CudaResult<bool> {
        if self.info().ordinal == peer.info().ordinal {
            return Ok(true);
        }
        let mut can = 0i32;
        // SAFETY: plain queries of two valid device handles into a local.
        unsafe {
            sys::cuDeviceCanAccessPeer(
                &mut can,
                self.context().cu_device(),
                peer.context().cu_device(),
            )
        }
        .result()?;
        if can == 0 {
            return Ok(false);
        }
        self.context().bind_to_thread()?;
        // SAFETY: enables access from the bound context to the peer's live context.
        match unsafe { sys::cuCtxEnablePeerAccess(peer.context().cu_ctx(), 0) } {
            sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => {
                Ok(true)
            }
            e => Err(CudaError::Driver(format!(
                "enabling peer access from {} (device {}) to device {}: {e:?}",
                self.info().name,
                self.info().ordinal,
                peer.info().ordinal
            ))),
        }
    }

    /// Copy `bytes` bytes from `src` (at byte `src_offset`) on `peer` into `dst` (at byte
    /// `dst_offset`) on this device, queued on this device's stream. The caller makes sure
    /// that `peer`'s stream has finished writing the source (e.g. by synchronising it).
    pub fn copy_from_peer(
        &self,
        peer: &CudaDevice,
        src: &DeviceBuffer,
        src_offset: usize,
        dst: &DeviceBuffer,
        dst_offset: usize,
        bytes: usize,
    ) -> CudaResult<()> {
        if src_offset + bytes > src.bytes() || dst_offset + bytes > dst.bytes() {
            return Err(CudaError::Driver(format!(
                "peer copy of {bytes} bytes from offset {src_offset} of a {}-byte buffer to \
                 offset {dst_offset} of a {}-byte buffer",
                src.bytes(),
                dst.bytes()
            )));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.context().bind_to_thread()?;
        // SAFETY: both ranges were checked to lie inside their buffers, which belong to the
        // two live contexts named.
        unsafe {
            sys::cuMemcpyPeerAsync(
                dst.ptr() + dst_offset as u64,
                self.context().cu_ctx(),
                src.ptr() + src_offset as u64,
                peer.context().cu_ctx(),
                bytes,
                self.stream().cu_stream(),
            )
        }
        .result()?;
        Ok(())
    }
}
