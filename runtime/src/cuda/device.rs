//! One CUDA device: its context, the stream every operation is queued on, its memory pool
//! and its kernels.

use super::alloc::{DeviceBuffer, MemStats, PinnedBuffer, Pool};
use super::error::{CudaError, CudaResult};
use super::module::KernelCache;
use super::{probe, DeviceInfo};
use bytemuck::Pod;
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{result, CudaContext, CudaFunction, CudaStream, LaunchConfig};
use medvae_kernels::cuda::Arch;
use std::sync::Arc;

/// Dynamic shared memory every kernel may use without opting in.
const DEFAULT_DYN_SMEM: u32 = 48 * 1024;

/// A CUDA device ready for kernels. Every operation is queued on one stream, in order; only
/// [`CudaDevice::download`] and [`CudaDevice::synchronize`] wait for the device.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    arch: Arch,
    pool: Arc<Pool>,
    kernels: KernelCache,
}

impl CudaDevice {
    /// Open device `ordinal`. Fails with [`CudaError::NotAvailable`] (never panics) when there
    /// is no driver, no such device, or the device is older than sm_80.
    pub fn new(ordinal: usize) -> CudaResult<Self> {
        let info = probe()?
            .devices
            .into_iter()
            .nth(ordinal)
            .ok_or_else(|| CudaError::NotAvailable(format!("no CUDA device {ordinal}")))?;
        let (major, minor) = info.compute_capability;
        if major < 8 {
            return Err(CudaError::NotAvailable(format!(
                "{} is sm_{major}{minor}; the kernels need sm_80 or newer (tensor-core mma, cp.async)",
                info.name
            )));
        }
        let ctx = CudaContext::new(ordinal)?;
        // Buffers are ordered by the single stream, not by cudarc's per-slice events.
        // SAFETY: we never use CudaSlice, whose multi-stream safety the events provide.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let arch = Arch::from_compute_capability(major, minor);
        Ok(CudaDevice {
            pool: Pool::new(Arc::clone(&ctx)),
            kernels: KernelCache::new(Arc::clone(&ctx), arch),
            ctx,
            stream,
            info,
            arch,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }
    pub fn arch(&self) -> Arch {
        self.arch
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    // ------------------------------------------------------------------ memory
    /// Uninitialised buffer of `bytes` bytes.
    pub fn alloc(&self, bytes: usize) -> CudaResult<DeviceBuffer> {
        self.pool.alloc(bytes)
    }
    /// Uninitialised buffer of `n` f32.
    pub fn alloc_f32(&self, n: usize) -> CudaResult<DeviceBuffer> {
        self.pool.alloc(n * 4)
    }
    /// Zeroed buffer of `n` f32.
    pub fn zeros_f32(&self, n: usize) -> CudaResult<DeviceBuffer> {
        let b = self.alloc_f32(n)?;
        self.memset_zero(&b)?;
        Ok(b)
    }
    /// Copy a host slice into a new buffer.
    pub fn upload<T: Pod>(&self, host: &[T]) -> CudaResult<DeviceBuffer> {
        let b = self.pool.alloc(std::mem::size_of_val(host))?;
        self.upload_into(host, &b)?;
        Ok(b)
    }
    /// Copy a host slice into the start of `dst` (which must be large enough).
    pub fn upload_into<T: Pod>(&self, host: &[T], dst: &DeviceBuffer) -> CudaResult<()> {
        let bytes = std::mem::size_of_val(host);
        if bytes > dst.bytes() {
            return Err(CudaError::Driver(format!(
                "upload of {bytes} bytes into a {}-byte buffer",
                dst.bytes()
            )));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread()?;
        // SAFETY: dst holds at least `bytes`; a pageable source is staged by the driver before
        // the call returns, so `host` may be reused afterwards.
        unsafe { result::memcpy_htod_async(dst.ptr(), host, self.stream.cu_stream()) }?;
        Ok(())
    }
    /// Copy from pinned host memory; returns at once (truly asynchronous). Keep `src` alive and
    /// unmodified until the stream has passed this point.
    pub fn upload_pinned(&self, src: &PinnedBuffer, dst: &DeviceBuffer) -> CudaResult<()> {
        self.upload_into(src.as_slice(), dst)
    }
    /// Copy the start of `src` into `host`, waiting for the stream first.
    pub fn download<T: Pod>(&self, src: &DeviceBuffer, host: &mut [T]) -> CudaResult<()> {
        let bytes = std::mem::size_of_val(host);
        if bytes > src.bytes() {
            return Err(CudaError::Driver(format!(
                "download of {bytes} bytes from a {}-byte buffer",
                src.bytes()
            )));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread()?;
        // SAFETY: src holds at least `bytes`; we synchronise before `host` is read.
        unsafe { result::memcpy_dtoh_async(host, src.ptr(), self.stream.cu_stream()) }?;
        self.stream.synchronize()?;
        Ok(())
    }
    /// The buffer's f32 contents.
    pub fn to_vec_f32(&self, src: &DeviceBuffer) -> CudaResult<Vec<f32>> {
        let mut v = vec![0.0f32; src.len_f32()];
        self.download(src, &mut v)?;
        Ok(v)
    }
    /// Zero the whole buffer.
    pub fn memset_zero(&self, buf: &DeviceBuffer) -> CudaResult<()> {
        if buf.bytes() == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread()?;
        // SAFETY: writes exactly the buffer's bytes.
        unsafe { result::memset_d8_async(buf.ptr(), 0, buf.bytes(), self.stream.cu_stream()) }?;
        Ok(())
    }
    /// Copy `bytes` bytes from `src` to `dst` (device to device).
    pub fn copy(&self, src: &DeviceBuffer, dst: &DeviceBuffer, bytes: usize) -> CudaResult<()> {
        if bytes > src.bytes() || bytes > dst.bytes() {
            return Err(CudaError::Driver(format!(
                "copy of {bytes} bytes between buffers of {} and {} bytes",
                src.bytes(),
                dst.bytes()
            )));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread()?;
        // SAFETY: both ranges are inside their buffers.
        unsafe { result::memcpy_dtod_async(dst.ptr(), src.ptr(), bytes, self.stream.cu_stream()) }?;
        Ok(())
    }
    /// Strided copy of `rows` rows of `width` bytes: row r goes from `src + src_offset +
    /// r·src_pitch` to `dst + dst_offset + r·dst_pitch` (slicing channels out of, or into,
    /// channels-last tensors without a kernel).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_2d(
        &self,
        src: &DeviceBuffer,
        src_offset: usize,
        src_pitch: usize,
        dst: &DeviceBuffer,
        dst_offset: usize,
        dst_pitch: usize,
        width: usize,
        rows: usize,
    ) -> CudaResult<()> {
        if rows == 0 || width == 0 {
            return Ok(());
        }
        let end = |offset: usize, pitch: usize| offset + (rows - 1) * pitch + width;
        if width > src_pitch.max(width)
            || width > dst_pitch.max(width)
            || end(src_offset, src_pitch) > src.bytes()
            || end(dst_offset, dst_pitch) > dst.bytes()
        {
            return Err(CudaError::Driver(format!(
                "2D copy of {rows}x{width} bytes does not fit buffers of {} and {} bytes",
                src.bytes(),
                dst.bytes()
            )));
        }
        self.ctx.bind_to_thread()?;
        let copy = cudarc::driver::sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: cudarc::driver::sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: src.ptr() + src_offset as u64,
            srcArray: std::ptr::null_mut(),
            srcPitch: src_pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: cudarc::driver::sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstHost: std::ptr::null_mut(),
            dstDevice: dst.ptr() + dst_offset as u64,
            dstArray: std::ptr::null_mut(),
            dstPitch: dst_pitch,
            WidthInBytes: width,
            Height: rows,
        };
        // SAFETY: both strided ranges were checked to lie inside their buffers above.
        unsafe { cudarc::driver::sys::cuMemcpy2DAsync_v2(&copy, self.stream.cu_stream()) }
            .result()?;
        Ok(())
    }
    /// Page-locked host buffer of `n` f32 (zeroed).
    pub fn pinned_f32(&self, n: usize) -> CudaResult<PinnedBuffer> {
        PinnedBuffer::new(Arc::clone(&self.ctx), n)
    }
    /// Wait until every queued operation has finished (and surface asynchronous errors).
    pub fn synchronize(&self) -> CudaResult<()> {
        self.stream.synchronize()?;
        Ok(())
    }
    pub fn memory(&self) -> MemStats {
        self.pool.stats()
    }
    pub fn reset_peak(&self) {
        self.pool.reset_peak()
    }
    /// Return cached blocks to the driver.
    pub fn empty_cache(&self) -> CudaResult<()> {
        self.pool.empty_cache()
    }

    // ------------------------------------------------------------------ kernels
    /// Compile (or load from the cache) and load every kernel module now rather than on first use.
    pub fn load_all_kernels(&self) -> CudaResult<()> {
        self.kernels.load_all()
    }

    /// The loaded function `entry`, allowed `dyn_smem` bytes of dynamic shared memory.
    pub(crate) fn function(&self, entry: &str, dyn_smem: u32) -> CudaResult<CudaFunction> {
        self.ctx.bind_to_thread()?;
        let f = self.kernels.function(entry)?;
        if dyn_smem > DEFAULT_DYN_SMEM {
            if dyn_smem as usize > self.info.max_shared_per_block_optin {
                return Err(CudaError::NotAvailable(format!(
                    "{entry} needs {dyn_smem} bytes of shared memory per block; {} allows {}",
                    self.info.name, self.info.max_shared_per_block_optin
                )));
            }
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dyn_smem as i32,
            )?;
        }
        Ok(f)
    }

    /// Number of streaming multiprocessors (for grid sizing).
    pub fn sm_count(&self) -> u32 {
        self.info.multiprocessors
    }
}

/// A launch configuration.
pub(crate) fn cfg(grid: (u32, u32, u32), block: (u32, u32, u32), smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes: smem,
    }
}
