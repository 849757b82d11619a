//! Multi-tensor Adam: one launch updates every parameter of an optimizer (torch.optim.Adam
//! semantics, amsgrad off, L2 weight decay).

use super::{check_f32, i32_of, Args};
use crate::cuda::device::cfg;
use crate::cuda::error::{geometry, CudaResult};
use crate::cuda::{CudaDevice, DeviceBuffer};

const KERNEL: &str = "cuda adam";
/// Elements per block.
const CHUNK: usize = 16384;

/// `AdamTensor` of `kernels/cuda/adam.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamTensor {
    p: u64,
    g: u64,
    m: u64,
    v: u64,
    n: i64,
    chunk_start: i64,
}
const _: () = assert!(std::mem::size_of::<AdamTensor>() == 48);

/// One parameter with its gradient and moment buffers (each of `len` f32).
#[derive(Clone, Copy, Debug)]
pub struct AdamParam<'a> {
    pub param: &'a DeviceBuffer,
    pub grad: &'a DeviceBuffer,
    pub m: &'a DeviceBuffer,
    pub v: &'a DeviceBuffer,
    pub len: usize,
}

/// Hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// One Adam step (`step` counts from 1) over every parameter; gradients are multiplied by
/// `grad_scale` first (e.g. 1/accumulation steps). The small descriptor table is uploaded each
/// call, so no device pointer outlives the borrowed buffers.
pub fn adam_step(
    dev: &CudaDevice,
    params: &[AdamParam],
    h: &AdamHyper,
    step: u64,
    grad_scale: f32,
) -> CudaResult<()> {
    if step == 0 {
        return Err(geometry(KERNEL, "Adam steps count from 1"));
    }
    let mut table = Vec::with_capacity(params.len());
    let mut chunks = 0usize;
    for p in params.iter().filter(|p| p.len > 0) {
        for (w, b) in [("param", p.param), ("grad", p.grad), ("m", p.m), ("v", p.v)] {
            check_f32(KERNEL, w, b, p.len)?;
        }
        table.push(AdamTensor {
            p: p.param.ptr(),
            g: p.grad.ptr(),
            m: p.m.ptr(),
            v: p.v.ptr(),
            n: p.len as i64,
            chunk_start: chunks as i64,
        });
        chunks += p.len.div_ceil(CHUNK);
    }
    if table.is_empty() {
        return Ok(());
    }
    if chunks > i32::MAX as usize {
        return Err(geometry(KERNEL, "too many parameter chunks"));
    }
    let t = step.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - (h.beta1 as f64).powi(t);
    let bc2 = 1.0 - (h.beta2 as f64).powi(t);
    let dev_table = dev.upload(&table)?;
    Args::new()
        .buf(&dev_table)
        .push(i32_of(KERNEL, "tensors", table.len())?)
        .push(CHUNK as i32)
        .push(h.lr)
        .push(h.beta1)
        .push(h.beta2)
        .push(h.eps)
        .push(h.weight_decay)
        .push(bc1 as f32)
        .push(bc2 as f32)
        .push(grad_scale)
        .launch(
            dev,
            "adam_multi",
            cfg((chunks as u32, 1, 1), (256, 1, 1), 0),
        )
}
