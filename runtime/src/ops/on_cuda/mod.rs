//! The CUDA side of the op API (feature `cuda`). Each public op of `crate::ops` checks shapes
//! once, then calls the function of the same name here when its operands live on a CUDA
//! device. Semantics are the CPU's: new outputs are returned, parameter gradients accumulate.
//! Every kernel queues on the device's one stream; only the scalar losses (L1, hinge) wait for
//! the device, to read their value back.

pub(crate) mod attention;
pub(crate) mod conv;
pub(crate) mod linear;
pub(crate) mod loss;
pub(crate) mod norm;
pub(crate) mod optim;
pub(crate) mod perceptual;
pub(crate) mod pointwise;
pub(crate) mod reduce;
pub(crate) mod reshape;
pub(crate) mod slices;
pub(crate) mod softmax;
pub(crate) mod strided;

use crate::cuda::{CudaDevice, CudaError, DeviceBuffer};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor_cuda::cuda_error;
use std::sync::Arc;

/// Attach the op name to a launcher error.
pub(crate) fn on<T>(op: &str, r: std::result::Result<T, CudaError>) -> Result<T> {
    r.map_err(|e| cuda_error(op, e))
}

/// The device of `t`, which must be a CUDA tensor.
pub(crate) fn device_of(op: &str, t: &Tensor) -> Result<Arc<CudaDevice>> {
    Ok(Arc::clone(t.cuda(op)?.0))
}

/// Run `launch` into a fresh one-element device buffer and read the value back (waits for the
/// device): every scalar loss and reduction that returns to the host goes through here.
pub(crate) fn read_scalar(
    op: &str,
    dev: &Arc<CudaDevice>,
    launch: impl FnOnce(&crate::cuda::DeviceBuffer) -> std::result::Result<(), CudaError>,
) -> Result<f64> {
    let out = on(op, dev.alloc_f32(1))?;
    on(op, launch(&out))?;
    let mut v = [0f32];
    on(op, dev.download(&out, &mut v))?;
    Ok(v[0] as f64)
}

/// A new tensor of `shape` on the device of `like`, written by one launcher call (given the
/// device and the new buffer): the form of every op here that returns a fresh output.
pub(crate) fn new_output(
    op: &str,
    like: &Tensor,
    shape: &[usize],
    launch: impl FnOnce(&CudaDevice, &DeviceBuffer) -> std::result::Result<(), CudaError>,
) -> Result<Tensor> {
    let dev = device_of(op, like)?;
    let y = Tensor::cuda_uninit(&dev, shape)?;
    on(op, launch(&dev, y.cuda(op)?.1))?;
    Ok(y)
}

/// What a layer backward writes: a new input gradient of `shape` (when `need_dx`), and the
/// device buffers of the parameter gradients it accumulates into (see [`param_grad_outputs`]).
pub(crate) fn backward_outputs<'a>(
    op: &str,
    dev: &Arc<CudaDevice>,
    shape: &[usize],
    need_dx: bool,
    dw: Option<&'a mut Tensor>,
    db: Option<&'a mut Tensor>,
) -> Result<(
    Option<Tensor>,
    Option<&'a DeviceBuffer>,
    Option<&'a DeviceBuffer>,
)> {
    let dx = match need_dx {
        true => Some(Tensor::cuda_uninit(dev, shape)?),
        false => None,
    };
    let (dwb, dbb) = param_grad_outputs(op, dw, db)?;
    Ok((dx, dwb, dbb))
}

/// The device buffers of the weight and bias gradients a layer backward accumulates into
/// (either may be absent).
pub(crate) fn param_grad_outputs<'a>(
    op: &str,
    dw: Option<&'a mut Tensor>,
    db: Option<&'a mut Tensor>,
) -> Result<(Option<&'a DeviceBuffer>, Option<&'a DeviceBuffer>)> {
    let dwb = match dw {
        Some(t) => Some(t.cuda_out(op)?),
        None => None,
    };
    let dbb = match db {
        Some(t) => Some(t.cuda_out(op)?),
        None => None,
    };
    Ok((dwb, dbb))
}
