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
