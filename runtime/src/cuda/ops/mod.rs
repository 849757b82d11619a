//! Typed launchers for every CUDA kernel. They take [`DeviceBuffer`]s by shared reference
//! (outputs included: device memory is ordered by the stream, not by Rust borrows; outputs may
//! alias inputs where the kernel is elementwise), validate lengths and geometry the way the CPU
//! kernels do (a buffer may be larger than needed, never smaller), and queue the kernel.
//! Semantics mirror `medvae_kernels::cpu` (same geometry structs where one exists): backward
//! launchers overwrite input gradients (or add `beta * old` where they take `beta`) and
//! accumulate parameter gradients.
// Launchers mirror kernel signatures, which carry many operands.
#![allow(clippy::too_many_arguments)]

pub mod adam;
pub mod attention;
pub mod conv;
pub mod conv_bf16;
pub mod conv_plan;
pub(crate) mod conv_streamed;
pub mod conv_tf32;
pub mod conv_thin;
pub mod conv_wgmma;
pub mod elementwise;
pub mod gemm;
pub mod loss;
pub mod lpips;
pub mod norm;
pub mod sample;
pub mod slices;
pub mod strided;

use super::device::{cfg, CudaDevice};
use super::error::{CudaError, CudaResult};
use super::DeviceBuffer;
use cudarc::driver::{result, LaunchConfig};
use medvae_kernels::KernelError;
use std::ffi::c_void;

/// A setting read from an environment variable on first use, which tests and benchmarks can
/// override at run time (to compare kernel families or tiles on one card): one of a few choices,
/// kept as its index.
pub(crate) struct EnvChoice {
    var: &'static str,
    // 0: the environment not read yet, else 1 + the choice's index.
    state: std::sync::atomic::AtomicU8,
}

impl EnvChoice {
    pub(crate) const fn new(var: &'static str) -> Self {
        EnvChoice {
            var,
            state: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// The environment variable's name.
    pub(crate) fn var(&self) -> &'static str {
        self.var
    }

    /// The choice set, else `parse` of the variable's value (None where unset), remembered
    /// unless it is an error.
    pub(crate) fn get<E>(
        &self,
        parse: impl FnOnce(Option<&str>) -> Result<u8, E>,
    ) -> Result<u8, E> {
        match self.state.load(std::sync::atomic::Ordering::Relaxed) {
            0 => {
                let index = parse(std::env::var(self.var).ok().as_deref())?;
                self.set(index);
                Ok(index)
            }
            s => Ok(s - 1),
        }
    }

    pub(crate) fn set(&self, index: u8) {
        let s = index.saturating_add(1);
        self.state.store(s, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A kernel family that is on or off by default, which an environment variable holding
/// `off_value` or `on_value` overrides, and that tests and benchmarks can switch at run time (to
/// compare two kernel families on one card).
pub(crate) struct KernelSwitch {
    choice: EnvChoice,
    off_value: &'static str,
    on_value: &'static str,
    on_by_default: bool,
}

impl KernelSwitch {
    pub(crate) const fn new(
        var: &'static str,
        off_value: &'static str,
        on_value: &'static str,
        on_by_default: bool,
    ) -> Self {
        KernelSwitch {
            choice: EnvChoice::new(var),
            off_value,
            on_value,
            on_by_default,
        }
    }

    pub(crate) fn on(&self) -> bool {
        let off = self.choice.get(|v| {
            let on = match v {
                Some(v) if v == self.off_value => false,
                Some(v) if v == self.on_value => true,
                _ => self.on_by_default,
            };
            Ok::<u8, std::convert::Infallible>(u8::from(!on))
        });
        off == Ok(0)
    }

    pub(crate) fn set(&self, on: bool) {
        self.choice.set(u8::from(!on));
    }
}

/// Threads per block of the 1-D grid-stride kernels.
pub(crate) const BLOCK: u32 = 256;

/// Types that may be passed by value to a kernel (their layout matches the C side).
///
/// # Safety
/// Implementors must be `#[repr(C)]` (or primitive) with the exact layout of the kernel's
/// parameter type.
pub(crate) unsafe trait KernelArg: Copy {}
// SAFETY: primitives with the same layout as their C counterparts.
unsafe impl KernelArg for i32 {}
// SAFETY: as above.
unsafe impl KernelArg for i64 {}
// SAFETY: as above.
unsafe impl KernelArg for u64 {}
// SAFETY: as above.
unsafe impl KernelArg for f32 {}

/// Kernel arguments, each copied into its own 8-byte-aligned slot.
pub(crate) struct Args {
    slots: Vec<Vec<u64>>,
}

impl Args {
    pub(crate) fn new() -> Self {
        Args {
            slots: Vec::with_capacity(16),
        }
    }
    pub(crate) fn push<T: KernelArg>(&mut self, v: T) -> &mut Self {
        let size = std::mem::size_of::<T>();
        let mut slot = vec![0u64; size.div_ceil(8).max(1)];
        // SAFETY: the slot has at least `size` bytes; T is plain data (KernelArg).
        unsafe {
            std::ptr::copy_nonoverlapping(
                &v as *const T as *const u8,
                slot.as_mut_ptr() as *mut u8,
                size,
            )
        };
        self.slots.push(slot);
        self
    }
    /// A buffer's device address.
    pub(crate) fn buf(&mut self, b: &DeviceBuffer) -> &mut Self {
        self.push(b.ptr())
    }
    /// An optional buffer (null when absent).
    pub(crate) fn opt(&mut self, b: Option<&DeviceBuffer>) -> &mut Self {
        self.push(b.map_or(0u64, DeviceBuffer::ptr))
    }
    /// Queue `entry` on the device's stream.
    pub(crate) fn launch(
        &mut self,
        dev: &CudaDevice,
        entry: &str,
        c: LaunchConfig,
    ) -> CudaResult<()> {
        if c.grid_dim.0 == 0 || c.grid_dim.1 == 0 || c.grid_dim.2 == 0 {
            return Ok(()); // nothing to do (empty tensor)
        }
        // Ops may run on any thread (the CPU side uses rayon): make the context current.
        dev.context().bind_to_thread()?;
        let f = dev.function(entry, c.shared_mem_bytes)?;
        let started = if super::profile::enabled() {
            dev.synchronize()?;
            Some(std::time::Instant::now())
        } else {
            None
        };
        let mut params: Vec<*mut c_void> = self
            .slots
            .iter_mut()
            .map(|s| s.as_mut_ptr() as *mut c_void)
            .collect();
        // SAFETY: `f` is a loaded function; `params` points at one slot per kernel parameter,
        // in order, each holding a value of the parameter's C type (the launchers construct
        // them from the kernel signatures); the slots outlive the call (the driver copies them).
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                c.grid_dim,
                c.block_dim,
                c.shared_mem_bytes,
                dev.stream().cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| CudaError::Driver(format!("launching {entry}: {e}")))?;
        if let Some(t0) = started {
            dev.synchronize()?;
            super::profile::record(entry, t0.elapsed());
        }
        Ok(())
    }
}

/// Grid for a 1-D grid-stride kernel over `n` items: enough blocks to fill the device, never
/// more than the work needs.
pub(crate) fn grid_1d(dev: &CudaDevice, n: usize) -> LaunchConfig {
    let want = n.div_ceil(BLOCK as usize).max(1);
    let cap = (dev.sm_count().max(1) as usize) * 32;
    let blocks = if n == 0 { 0 } else { want.min(cap) as u32 };
    cfg((blocks, 1, 1), (BLOCK, 1, 1), 0)
}

/// `buf` must hold at least `expected` f32.
pub(crate) fn check_f32(
    kernel: &'static str,
    what: &'static str,
    buf: &DeviceBuffer,
    expected: usize,
) -> CudaResult<()> {
    if buf.len_f32() >= expected {
        Ok(())
    } else {
        Err(CudaError::Kernel(KernelError::Length {
            kernel,
            what,
            got: buf.len_f32(),
            expected,
        }))
    }
}

/// `v` as an i32 kernel argument, or a geometry error naming `what`.
pub(crate) fn i32_of(kernel: &'static str, what: &str, v: usize) -> CudaResult<i32> {
    i32::try_from(v).map_err(|_| {
        super::error::geometry(
            kernel,
            format!("{what} = {v} exceeds the kernel's 32-bit range"),
        )
    })
}

/// `v` as an i64 kernel argument.
pub(crate) fn i64_of(v: usize) -> i64 {
    v as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unset, a switch is on; `set` overrides it both ways. A choice remembers what `parse`
    /// gave and takes no second reading, but not a failed one.
    #[test]
    fn settings_read_once_and_take_overrides() {
        let s = KernelSwitch::new("MEDVAE_TEST_SWITCH_NOT_SET", "off", "on", true);
        assert!(s.on());
        let d = KernelSwitch::new("MEDVAE_TEST_SWITCH_NOT_SET_EITHER", "off", "on", false);
        assert!(!d.on());
        s.set(false);
        assert!(!s.on());
        s.set(true);
        assert!(s.on());
        let c = EnvChoice::new("MEDVAE_TEST_CHOICE_NOT_SET");
        assert_eq!(
            c.get(|v| if v.is_none() { Err("unset") } else { Ok(9) }),
            Err("unset")
        );
        assert_eq!(c.get(|_| Ok::<u8, ()>(2)), Ok(2));
        assert_eq!(c.get(|_| Ok::<u8, ()>(5)), Ok(2));
        c.set(0);
        assert_eq!(c.get(|_| Ok::<u8, ()>(5)), Ok(0));
    }
}
