//! Device memory: a size-bucketed caching allocator and the buffers it hands out.
//!
//! Freed buffers go back to a free list keyed by bucket size instead of `cuMemFree`, so a
//! training step that allocates the same sizes every iteration makes no driver allocation in
//! steady state. All work runs on the device's one stream, so a block reused by the next
//! allocation is stream-ordered after every kernel that used it before: no event is needed.
//! (A second stream would need cross-stream events before reuse.)
//!
//! Buckets: at least 512 bytes; powers of two up to 64 MiB; multiples of 16 MiB above (at most
//! 1/4 waste). When the driver reports out-of-memory, every cached block is released and the
//! allocation retried once.

use super::error::{CudaError, CudaResult};
use cudarc::driver::{result, sys, CudaContext};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

const MIN_BUCKET: usize = 512;
const POW2_LIMIT: usize = 64 << 20;
const LARGE_STEP: usize = 16 << 20;

/// Bucket (allocation) size for a request of `bytes`.
pub fn bucket_size(bytes: usize) -> usize {
    if bytes <= MIN_BUCKET {
        MIN_BUCKET
    } else if bytes <= POW2_LIMIT {
        bytes.next_power_of_two()
    } else {
        bytes.div_ceil(LARGE_STEP) * LARGE_STEP
    }
}

/// Counters of one device's pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Bytes (bucket sizes) held by live buffers.
    pub in_use_bytes: usize,
    /// Highest `in_use_bytes` since creation or [`super::CudaDevice::reset_peak`].
    pub peak_bytes: usize,
    /// Bytes of freed blocks kept for reuse.
    pub cached_bytes: usize,
    /// `cuMemAlloc` calls so far (a steady-state step adds none).
    pub driver_allocations: u64,
    /// Allocations served from the cache.
    pub reuses: u64,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<usize, Vec<sys::CUdeviceptr>>,
    stats: MemStats,
}

/// The caching allocator of one device.
pub(crate) struct Pool {
    ctx: Arc<CudaContext>,
    state: Mutex<PoolState>,
}

impl Pool {
    pub(crate) fn new(ctx: Arc<CudaContext>) -> Arc<Self> {
        Arc::new(Pool {
            ctx,
            state: Mutex::new(PoolState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock leaves consistent data (plain counters and lists).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn stats(&self) -> MemStats {
        self.lock().stats
    }

    pub(crate) fn reset_peak(&self) {
        let mut s = self.lock();
        s.stats.peak_bytes = s.stats.in_use_bytes;
    }

    /// Free every cached block (returns memory to the driver).
    pub(crate) fn empty_cache(&self) -> CudaResult<()> {
        let blocks: Vec<sys::CUdeviceptr> = {
            let mut s = self.lock();
            s.stats.cached_bytes = 0;
            s.free.drain().flat_map(|(_, v)| v).collect()
        };
        if blocks.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread()?;
        // Blocks may still be in use by queued kernels: wait before freeing.
        self.ctx.synchronize()?;
        for p in blocks {
            // SAFETY: p came from cuMemAlloc and no live buffer refers to it.
            unsafe { result::free_sync(p) }?;
        }
        Ok(())
    }

    pub(crate) fn alloc(self: &Arc<Self>, bytes: usize) -> CudaResult<DeviceBuffer> {
        let bucket = bucket_size(bytes);
        let cached = {
            let mut s = self.lock();
            let p = s.free.get_mut(&bucket).and_then(|v| v.pop());
            if p.is_some() {
                s.stats.cached_bytes -= bucket;
                s.stats.reuses += 1;
            }
            p
        };
        let ptr = match cached {
            Some(p) => p,
            None => self.driver_alloc(bucket)?,
        };
        let mut s = self.lock();
        s.stats.in_use_bytes += bucket;
        let new_peak = s.stats.in_use_bytes > s.stats.peak_bytes;
        s.stats.peak_bytes = s.stats.peak_bytes.max(s.stats.in_use_bytes);
        let live = s.stats.in_use_bytes;
        drop(s);
        if new_peak {
            crate::memory_trace::record_peak(live, bucket);
        }
        Ok(DeviceBuffer {
            ptr,
            bytes,
            bucket,
            pool: Arc::clone(self),
        })
    }

    fn driver_alloc(&self, bucket: usize) -> CudaResult<sys::CUdeviceptr> {
        self.ctx.bind_to_thread()?;
        // SAFETY: plain allocation in the bound context.
        match unsafe { result::malloc_sync(bucket) } {
            Ok(p) => {
                self.lock().stats.driver_allocations += 1;
                Ok(p)
            }
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                self.empty_cache()?;
                // SAFETY: as above.
                let p = unsafe { result::malloc_sync(bucket) }.map_err(|e| {
                    if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                        CudaError::OutOfMemory {
                            requested: bucket,
                            in_use: self.lock().stats.in_use_bytes,
                        }
                    } else {
                        CudaError::Driver(format!("allocating {bucket} bytes: {e}"))
                    }
                })?;
                self.lock().stats.driver_allocations += 1;
                Ok(p)
            }
            Err(e) => Err(CudaError::Driver(format!("allocating {bucket} bytes: {e}"))),
        }
    }

    fn release(&self, ptr: sys::CUdeviceptr, bucket: usize) {
        let mut s = self.lock();
        s.stats.in_use_bytes -= bucket;
        s.stats.cached_bytes += bucket;
        s.free.entry(bucket).or_default().push(ptr);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the context going away frees the memory anyway.
        let _ = self.empty_cache();
    }
}

/// A block of device memory from the pool (returned to it on drop). Its contents are
/// uninitialised until written. Kernels take buffers by shared reference: device memory is not
/// Rust memory, and ordering is the stream's.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    bucket: usize,
    pool: Arc<Pool>,
}

impl DeviceBuffer {
    /// Device address (kernel argument).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Requested size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Number of f32 elements the requested size holds.
    pub fn len_f32(&self) -> usize {
        self.bytes / 4
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({:#x}, {} bytes)", self.ptr, self.bytes)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        self.pool.release(self.ptr, self.bucket);
    }
}

/// Page-locked host memory of f32 (fast, truly asynchronous host<->device copies, e.g. the
/// data loader's batch staging buffers).
pub struct PinnedBuffer {
    ptr: *mut f32,
    len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: the allocation is plain host memory owned by this value.
unsafe impl Send for PinnedBuffer {}
// SAFETY: shared access only hands out `&[f32]`.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    pub(crate) fn new(ctx: Arc<CudaContext>, len: usize) -> CudaResult<Self> {
        ctx.bind_to_thread()?;
        let bytes = len.max(1) * 4;
        // SAFETY: allocation of `bytes` page-locked bytes (flags 0: cached, portable off).
        let ptr = unsafe { result::malloc_host(bytes, 0) }? as *mut f32;
        if ptr.is_null() {
            return Err(CudaError::Driver("cuMemHostAlloc returned null".into()));
        }
        // SAFETY: fresh allocation of len f32; zero it so the slice is initialised.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
        Ok(PinnedBuffer { ptr, len, ctx })
    }
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: ptr holds len initialised f32 for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        // Queued copies may still read or write it.
        let _ = self.ctx.bind_to_thread();
        let _ = self.ctx.synchronize();
        // SAFETY: allocated by cuMemHostAlloc, freed once.
        let _ = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

#[cfg(test)]
mod tests {
    use super::bucket_size;

    #[test]
    fn buckets_round_up_without_large_waste() {
        assert_eq!(bucket_size(0), 512);
        assert_eq!(bucket_size(512), 512);
        assert_eq!(bucket_size(513), 1024);
        assert_eq!(bucket_size(3 << 20), 4 << 20);
        assert_eq!(bucket_size(64 << 20), 64 << 20);
        assert_eq!(bucket_size((64 << 20) + 1), 80 << 20);
        for b in [1usize, 1000, 123_456, 70 << 20, 1 << 30] {
            let s = bucket_size(b);
            assert!(s >= b);
            assert!(s <= (b * 2).max(512), "{b} -> {s}");
        }
    }
}
