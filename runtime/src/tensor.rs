//! `Tensor`: a shape, a dtype and storage on one device, always contiguous.
//!
//! Activations are channels-last (`[N, H, W, C]`, `[N, D, H, W, C]`); PyTorch-layout data
//! (checkpoints, golden files) is converted at the boundary with [`crate::layout`].

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Result, RuntimeError};
use crate::memory::PoolBuf;
use half::{bf16, f16};
use std::borrow::Cow;

/// The bytes behind a tensor.
#[derive(Debug, Clone)]
pub enum Storage {
    F32(PoolBuf),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    /// f32 elements in device memory (see `crate::tensor_cuda`).
    #[cfg(feature = "cuda")]
    Cuda(crate::tensor_cuda::CudaStorage),
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub(crate) shape: Vec<usize>,
    pub(crate) storage: Storage,
    pub(crate) device: Device,
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A zero-filled f32 tensor on the CPU.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::F32(PoolBuf::zeros(numel(shape))),
            device: Device::Cpu,
        }
    }

    /// An f32 CPU tensor whose contents a kernel will overwrite completely.
    pub fn uninit(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::F32(PoolBuf::uninit(numel(shape))),
            device: Device::Cpu,
        }
    }

    /// Wrap f32 data; the length must match the shape.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        if data.len() != numel(shape) {
            return Err(RuntimeError::shape(
                "Tensor::from_vec",
                format!(
                    "shape {:?} needs {} elements, got {}",
                    shape,
                    numel(shape),
                    data.len()
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::F32(PoolBuf::from_vec(data)),
            device: Device::Cpu,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn device(&self) -> Device {
        self.device
    }
    pub fn dtype(&self) -> DType {
        match self.storage {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => DType::F32,
        }
    }
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// The f32 elements. Errors (naming `op`) for half storage: compute is f32.
    pub fn f32s(&self, op: &str) -> Result<&[f32]> {
        match &self.storage {
            Storage::F32(b) => Ok(b),
            _ => Err(self.dtype_error(op)),
        }
    }

    /// Mutable f32 elements, see [`Tensor::f32s`].
    pub fn f32s_mut(&mut self, op: &str) -> Result<&mut [f32]> {
        let err = self.dtype_error(op);
        match &mut self.storage {
            Storage::F32(b) => Ok(b),
            _ => Err(err),
        }
    }

    /// For a CPU f32 tensor, a number that changes whenever the elements may have changed
    /// (see [`PoolBuf::version`]): caches of data derived from a tensor key on it.
    pub fn content_version(&self) -> Option<u64> {
        match &self.storage {
            Storage::F32(b) => Some(b.version()),
            _ => None,
        }
    }

    fn dtype_error(&self, op: &str) -> RuntimeError {
        if !self.device.is_cpu() {
            return RuntimeError::WrongDevice {
                op: op.to_string(),
                device: self.device.to_string(),
                expected: "cpu (copy it with Tensor::to_device first)".into(),
            };
        }
        RuntimeError::DType {
            op: op.to_string(),
            dtype: self.dtype().to_string(),
            expected: "f32".into(),
        }
    }

    /// Copy the elements out as f32 whatever the storage type. For a CUDA tensor this waits
    /// for the device; a failed download (a lost device) yields NaNs, which every caller's
    /// finiteness check reports. Use [`Tensor::to_device`] to handle that error yourself.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.storage {
            Storage::F32(b) => b.to_vec(),
            Storage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => c
                .download()
                .unwrap_or_else(|_| vec![f32::NAN; self.numel()]),
        }
    }

    /// Convert storage to `dtype` (rounding to nearest even for half types). A CUDA tensor is
    /// converted on the host: the result is a CPU tensor.
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        let device = match &self.storage {
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) if dtype == DType::F32 => return self.clone(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Device::Cpu,
            _ => self.device,
        };
        let storage = match dtype {
            DType::F32 => Storage::F32(PoolBuf::from_vec(self.to_f32_vec())),
            DType::F16 => Storage::F16(self.to_f32_vec().into_iter().map(f16::from_f32).collect()),
            DType::BF16 => {
                Storage::BF16(self.to_f32_vec().into_iter().map(bf16::from_f32).collect())
            }
        };
        Tensor {
            shape: self.shape.clone(),
            storage,
            device,
        }
    }

    /// The same data under another shape with the same number of elements (free: contiguous).
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(RuntimeError::shape(
                "reshape",
                format!("cannot view {:?} as {:?}", self.shape, shape),
            ));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Fail with a message naming `op` unless the shape equals `expected`.
    pub fn expect_shape(&self, op: &str, what: &str, expected: &[usize]) -> Result<()> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(RuntimeError::shape(
                op,
                format!("{what} has shape {:?}, expected {:?}", self.shape, expected),
            ))
        }
    }

    /// Fail unless the tensor is on `device`.
    pub fn expect_device(&self, op: &str, device: Device) -> Result<()> {
        if self.device == device {
            Ok(())
        } else {
            Err(RuntimeError::WrongDevice {
                op: op.into(),
                device: self.device.to_string(),
                expected: device.to_string(),
            })
        }
    }

    /// A zero-filled f32 tensor of `shape` on `device`.
    pub fn zeros_on(shape: &[usize], device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Tensor::zeros(shape)),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => Tensor::cuda_zeros(&crate::tensor_cuda::open("zeros", n)?, shape),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Tensor::zeros(shape).to_device(device),
        }
    }

    /// This tensor on `device` (a copy unless it is already there; CUDA holds f32).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device == Device::Cpu && device == Device::Cpu {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        {
            self.to_device_cuda(device)
        }
        #[cfg(not(feature = "cuda"))]
        Err(RuntimeError::CudaUnavailable(
            "this binary was built without the `cuda` feature".into(),
        ))
    }

    /// This tensor on `device`, without a copy when it is already there.
    pub fn into_device(self, device: Device) -> Result<Tensor> {
        if self.device == device {
            Ok(self)
        } else {
            self.to_device(device)
        }
    }

    /// This tensor on `device`: borrowed when it is already there, else a copy.
    pub fn on_device(&self, device: Device) -> Result<Cow<'_, Tensor>> {
        if self.device == device {
            Ok(Cow::Borrowed(self))
        } else {
            self.to_device(device).map(Cow::Owned)
        }
    }

    /// A zero-filled f32 tensor with `self`'s shape, on `self`'s device.
    pub fn zeros_like(&self) -> Result<Self> {
        Tensor::zeros_on(&self.shape, self.device)
    }

    /// True if any element is NaN or infinite.
    /// On CUDA this is one reduction and a scalar read back; a failed read counts as non-finite.
    pub fn has_non_finite(&self) -> bool {
        crate::ops::reduce::count_non_finite(self).map_or(true, |c| c > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length() {
        assert!(Tensor::from_vec(&[2, 3], vec![0.0; 5]).is_err());
        let t = Tensor::from_vec(&[2, 3], vec![1.0; 6]).unwrap();
        assert_eq!(t.numel(), 6);
    }

    #[test]
    fn half_round_trip_and_dtype_errors() {
        let t = Tensor::from_vec(&[3], vec![1.0, 0.5, -2.25]).unwrap();
        let h = t.to_dtype(DType::BF16);
        assert_eq!(h.dtype(), DType::BF16);
        assert!(h.f32s("test").is_err());
        assert_eq!(h.to_dtype(DType::F32).to_f32_vec(), vec![1.0, 0.5, -2.25]);
        assert_eq!(t.to_dtype(DType::F16).to_f32_vec(), vec![1.0, 0.5, -2.25]);
    }
}
