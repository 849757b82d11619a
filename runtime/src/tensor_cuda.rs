//! Tensors in CUDA device memory: the storage, host <-> device copies, and what the op layer
//! needs to launch kernels on them.
//!
//! A CUDA tensor shares its buffer on `clone` (cheap, infallible); the first write through
//! [`Tensor::cuda_out`] copies a shared buffer first, so clones never see each other's writes.

use crate::cuda::{registry, CudaDevice, CudaError, DeviceBuffer};
use crate::error::{Result, RuntimeError};
use crate::tensor::{numel, Storage};
use crate::{Device, Tensor};
use std::sync::Arc;

/// f32 elements in a device buffer.
#[derive(Clone)]
pub struct CudaStorage {
    dev: Arc<CudaDevice>,
    buf: Arc<DeviceBuffer>,
    len: usize,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({} f32 on {})",
            self.len,
            self.dev.info().name
        )
    }
}

impl CudaStorage {
    /// The elements, copied to the host (waits for the device).
    pub fn download(&self) -> std::result::Result<Vec<f32>, CudaError> {
        let mut v = vec![0.0f32; self.len];
        self.dev.download(&self.buf, &mut v)?;
        Ok(v)
    }
}

/// A CUDA error as a runtime error naming the op.
pub(crate) fn cuda_error(op: &str, e: CudaError) -> RuntimeError {
    RuntimeError::Cuda {
        op: op.to_string(),
        msg: e.to_string(),
    }
}

/// Device `ordinal` for `op`; no driver or device is [`RuntimeError::CudaUnavailable`].
pub(crate) fn open(op: &str, ordinal: usize) -> Result<Arc<CudaDevice>> {
    registry::device(ordinal).map_err(|e| match e {
        CudaError::NotAvailable(why) => RuntimeError::CudaUnavailable(why),
        e => cuda_error(op, e),
    })
}

impl Tensor {
    /// An uninitialised f32 tensor on `dev` (a kernel will overwrite it completely).
    pub(crate) fn cuda_uninit(dev: &Arc<CudaDevice>, shape: &[usize]) -> Result<Tensor> {
        let buf = dev
            .alloc_f32(numel(shape))
            .map_err(|e| cuda_error("allocate", e))?;
        Tensor::from_cuda_buffer(dev, shape, buf)
    }

    /// A tensor of `shape` owning `buf` (e.g. written by a launcher that allocated it), which
    /// must hold the shape's elements.
    pub(crate) fn from_cuda_buffer(
        dev: &Arc<CudaDevice>,
        shape: &[usize],
        buf: DeviceBuffer,
    ) -> Result<Tensor> {
        let len = numel(shape);
        if buf.len_f32() < len {
            return Err(RuntimeError::shape(
                "cuda tensor",
                format!("a buffer of {} f32 cannot hold {shape:?}", buf.len_f32()),
            ));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cuda(CudaStorage {
                dev: Arc::clone(dev),
                buf: Arc::new(buf),
                len,
            }),
            device: Device::Cuda(dev.info().ordinal),
        })
    }

    /// A zero-filled f32 tensor on `dev`.
    pub(crate) fn cuda_zeros(dev: &Arc<CudaDevice>, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::cuda_uninit(dev, shape)?;
        let (_, buf) = t.cuda("zeros")?;
        dev.memset_zero(buf).map_err(|e| cuda_error("zeros", e))?;
        Ok(t)
    }

    /// The buffer of a CUDA tensor given up by the tensor: it is freed when the returned share
    /// is dropped, unless a clone of the tensor still shares it.
    pub(crate) fn into_cuda_buffer(self, op: &str) -> Result<Arc<DeviceBuffer>> {
        match self.storage {
            Storage::Cuda(c) => Ok(c.buf),
            _ => Err(self.not_on_cuda(op)),
        }
    }

    /// The device and buffer of a CUDA tensor (error naming `op` otherwise).
    pub(crate) fn cuda(&self, op: &str) -> Result<(&Arc<CudaDevice>, &DeviceBuffer)> {
        match &self.storage {
            Storage::Cuda(c) => Ok((&c.dev, &c.buf)),
            _ => Err(self.not_on_cuda(op)),
        }
    }

    /// The error of `op` given this (non-CUDA) tensor where it needs a CUDA one.
    fn not_on_cuda(&self, op: &str) -> RuntimeError {
        RuntimeError::WrongDevice {
            op: op.to_string(),
            device: self.device.to_string(),
            expected: "a CUDA device".into(),
        }
    }

    /// The buffer of a CUDA tensor about to be written: a buffer shared with a clone is copied
    /// first (copy on write).
    pub(crate) fn cuda_out(&mut self, op: &str) -> Result<&DeviceBuffer> {
        self.cuda(op)?;
        let Storage::Cuda(c) = &mut self.storage else {
            unreachable!("checked by cuda() above")
        };
        if Arc::get_mut(&mut c.buf).is_none() {
            let copy = c.dev.alloc_f32(c.len).map_err(|e| cuda_error(op, e))?;
            c.dev
                .copy(&c.buf, &copy, c.len * 4)
                .map_err(|e| cuda_error(op, e))?;
            c.buf = Arc::new(copy);
        }
        Ok(&c.buf)
    }

    /// Copy between the host and a CUDA device (f32 on the device whatever the host dtype).
    pub(crate) fn to_device_cuda(&self, device: Device) -> Result<Tensor> {
        const OP: &str = "to_device";
        match (&self.storage, device) {
            (Storage::Cuda(_), Device::Cuda(n)) if self.device == Device::Cuda(n) => {
                Ok(self.clone())
            }
            (Storage::Cuda(c), _) => {
                let host = c.download().map_err(|e| cuda_error(OP, e))?;
                let t = Tensor::from_vec(&self.shape, host)?;
                t.to_device(device)
            }
            (_, Device::Cuda(n)) => {
                let dev = open(OP, n)?;
                let host = self.to_f32_vec();
                let buf = dev.upload(&host).map_err(|e| cuda_error(OP, e))?;
                Ok(Tensor {
                    shape: self.shape.clone(),
                    storage: Storage::Cuda(CudaStorage {
                        dev,
                        buf: Arc::new(buf),
                        len: host.len(),
                    }),
                    device,
                })
            }
            (_, Device::Cpu) => Ok(self.clone()),
        }
    }
}
