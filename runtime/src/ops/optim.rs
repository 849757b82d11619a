//! Adam over tensors on any device. [`AdamUpdate`] gathers an optimizer's parameters: CPU
//! parameters are updated as they are added (the kernel is parallel within a tensor), CUDA
//! parameters are collected and updated by one multi-tensor launch per step count in
//! [`AdamUpdate::finish`] (one launch for a whole model instead of one per tensor).

use super::common_device;
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::adam::{adam_update, AdamStep};

/// The settings shared by every parameter of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamSettings {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Multiplies every gradient first (1 / accumulation steps).
    pub grad_scale: f32,
}

/// A CUDA parameter waiting for the launch: aliases of its buffers (made unique first, so the
/// in-place update writes only the parameter's own storage) and its step count.
#[cfg(feature = "cuda")]
#[derive(Debug)]
pub(crate) struct PendingCuda {
    pub step: u64,
    pub param: Tensor,
    pub grad: Tensor,
    pub m: Tensor,
    pub v: Tensor,
}

#[derive(Debug)]
pub struct AdamUpdate {
    settings: AdamSettings,
    #[cfg(feature = "cuda")]
    pending: Vec<PendingCuda>,
}

impl AdamUpdate {
    pub fn new(settings: AdamSettings) -> AdamUpdate {
        AdamUpdate {
            settings,
            #[cfg(feature = "cuda")]
            pending: Vec::new(),
        }
    }

    /// Update `param` with `grad` and its moments `m`, `v` (all on one device, one length) at
    /// step `step` (from 1). On the CPU this happens now; on CUDA at [`AdamUpdate::finish`].
    pub fn add(
        &mut self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        step: u64,
    ) -> Result<()> {
        const OP: &str = "adam";
        let dev = common_device(OP, &[param, grad, m, v])?;
        for (what, t) in [("gradient", grad), ("exp_avg", &*m), ("exp_avg_sq", &*v)] {
            if t.numel() != param.numel() {
                return Err(RuntimeError::shape(
                    OP,
                    format!(
                        "{what} has {} elements, the parameter {}",
                        t.numel(),
                        param.numel()
                    ),
                ));
            }
        }
        #[cfg(feature = "cuda")]
        if !dev.is_cpu() {
            let p = super::on_cuda::optim::pending(OP, param, grad, m, v, step)?;
            self.pending.push(p);
            return Ok(());
        }
        let _timer = super::cpu_only(OP, dev)?;
        let s = self.settings;
        let st = AdamStep {
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            step,
            grad_scale: s.grad_scale,
        };
        adam_update(
            &st,
            param.f32s_mut(OP)?,
            grad.f32s(OP)?,
            m.f32s_mut(OP)?,
            v.f32s_mut(OP)?,
        )?;
        Ok(())
    }

    /// Launch the pending CUDA updates (nothing to do for CPU parameters).
    pub fn finish(self) -> Result<()> {
        #[cfg(feature = "cuda")]
        super::on_cuda::optim::launch("adam", &self.settings, self.pending)?;
        Ok(())
    }
}
