//! Multi-tensor Adam on CUDA: the pending parameters of an [`AdamUpdate`] are grouped by step
//! count (normally one group) and each group is one `adam_multi` launch.
//!
//! [`AdamUpdate`]: crate::ops::optim::AdamUpdate

use super::{device_of, on};
use crate::cuda::ops::adam::{adam_step, AdamHyper, AdamParam};
use crate::error::Result;
use crate::ops::optim::{AdamSettings, PendingCuda};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Make the written buffers unique to `param`, `m` and `v` (copy on write), then alias them.
pub(crate) fn pending(
    op: &str,
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    step: u64,
) -> Result<PendingCuda> {
    param.cuda_out(op)?;
    m.cuda_out(op)?;
    v.cuda_out(op)?;
    Ok(PendingCuda {
        step,
        param: param.clone(),
        grad: grad.clone(),
        m: m.clone(),
        v: v.clone(),
    })
}

pub(crate) fn launch(op: &str, s: &AdamSettings, pending: Vec<PendingCuda>) -> Result<()> {
    let mut groups: BTreeMap<(u64, usize), Vec<&PendingCuda>> = BTreeMap::new();
    for p in &pending {
        let ordinal = match p.param.device() {
            crate::Device::Cuda(n) => n,
            crate::Device::Cpu => 0,
        };
        groups.entry((p.step, ordinal)).or_default().push(p);
    }
    let h = AdamHyper {
        lr: s.lr,
        beta1: s.beta1,
        beta2: s.beta2,
        eps: s.eps,
        weight_decay: 0.0,
    };
    for ((step, _), group) in groups {
        let dev = device_of(op, &group[0].param)?;
        let mut params = Vec::with_capacity(group.len());
        for p in &group {
            params.push(AdamParam {
                param: p.param.cuda(op)?.1,
                grad: p.grad.cuda(op)?.1,
                m: p.m.cuda(op)?.1,
                v: p.v.cuda(op)?.1,
                len: p.param.numel(),
            });
        }
        on(op, adam_step(&dev, &params, &h, step, s.grad_scale))?;
    }
    Ok(())
}
