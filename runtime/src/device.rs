use crate::error::{Result, RuntimeError};
use std::fmt;
use std::str::FromStr;

/// Where a tensor lives. The CPU is always available; CUDA devices are probed at run time
/// (dynamic loading), so a binary built here runs unchanged on machines without a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// Check that the device can be used now. CPU always succeeds; CUDA probes the driver
    /// library before any driver call, and reports why it cannot be used instead of panicking.
    pub fn ensure_available(self) -> Result<Self> {
        match self {
            Device::Cpu => Ok(self),
            Device::Cuda(ordinal) => cuda_available(ordinal).map(|_| self),
        }
    }

    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }

    /// Wait until the device has finished all queued work (CUDA ops are asynchronous; the CPU
    /// returns at once). Timings of CUDA work must call this before reading the clock.
    pub fn synchronize(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => crate::tensor_cuda::open("synchronize", n)?
                .synchronize()
                .map_err(|e| crate::tensor_cuda::cuda_error("synchronize", e)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(n) => cuda_available(n),
        }
    }

    /// Peak bytes of device memory in use since the last [`Device::reset_peak_memory`] (`None`
    /// on the CPU, whose tensors `crate::memory` counts).
    pub fn peak_memory(self) -> Option<usize> {
        match self {
            Device::Cpu => None,
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => crate::cuda::registry::device(n)
                .ok()
                .map(|d| d.memory().peak_bytes),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => None,
        }
    }

    /// A one-line description for logs: `cpu (2 threads)`, `cuda:0 (NVIDIA H200, 139.8 GiB)`.
    pub fn describe(self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => match crate::cuda::registry::device(n) {
                Ok(d) => format!(
                    "{self} ({}, {:.1} GiB)",
                    d.info().name,
                    d.info().total_memory as f64 / (1u64 << 30) as f64
                ),
                Err(_) => self.to_string(),
            },
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => self.to_string(),
        }
    }

    /// Restart [`Device::peak_memory`] from the bytes in use now.
    pub fn reset_peak_memory(self) {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(n) = self {
            if let Ok(d) = crate::cuda::registry::device(n) {
                d.reset_peak();
            }
        }
    }
}

/// Precision of convolutions and linear layers on CUDA: `fp32` (direct kernels, the default),
/// `tf32` or `bf16` (tensor cores, f32 accumulation). Process-wide.
pub fn set_cuda_precision(name: &str) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        use crate::cuda::ops::conv::ConvPrecision;
        let p = match name {
            "fp32" => ConvPrecision::Fp32,
            "tf32" => ConvPrecision::Tf32,
            "bf16" => ConvPrecision::Bf16,
            other => {
                return Err(RuntimeError::Other(format!(
                    "unknown CUDA precision `{other}` (fp32, tf32, bf16)"
                )))
            }
        };
        crate::cuda::registry::set_precision(p);
        Ok(())
    }
    #[cfg(not(feature = "cuda"))]
    Err(RuntimeError::CudaUnavailable(format!(
        "precision {name}: this binary was built without the `cuda` feature"
    )))
}

#[cfg(feature = "cuda")]
fn cuda_available(ordinal: usize) -> Result<()> {
    // SAFETY: only tries to dlopen the driver library; no driver call is made before it
    // reports success.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(RuntimeError::CudaUnavailable(
            "the NVIDIA driver library (libcuda.so) was not found on this machine".into(),
        ));
    }
    let count = cudarc::driver::CudaContext::device_count().map_err(|e| {
        RuntimeError::CudaUnavailable(format!("cuInit/cuDeviceGetCount failed: {e}"))
    })?;
    if ordinal >= count as usize {
        return Err(RuntimeError::CudaUnavailable(format!(
            "device cuda:{ordinal} requested but {count} CUDA device(s) present"
        )));
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn cuda_available(_ordinal: usize) -> Result<()> {
    Err(RuntimeError::CudaUnavailable(
        "this binary was built without the `cuda` feature".into(),
    ))
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for Device {
    type Err = RuntimeError;
    /// Accepts `cpu`, `cuda` (= `cuda:0`) and `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        if s == "cpu" {
            return Ok(Device::Cpu);
        }
        if s == "cuda" || s == "gpu" {
            return Ok(Device::Cuda(0));
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n.parse().map(Device::Cuda).map_err(|_| {
                RuntimeError::Other(format!("bad device `{s}`: expected cpu, cuda or cuda:N"))
            });
        }
        Err(RuntimeError::Other(format!(
            "unknown device `{s}`: expected cpu, cuda or cuda:N"
        )))
    }
}
