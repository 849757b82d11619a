//! Adam, as `torch.optim.Adam` (no weight decay, no amsgrad): per parameter
//!
//! ```text
//! m ← β1·m + (1 − β1)·g        v ← β2·v + (1 − β2)·g²
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! with the same operation order as PyTorch's single-tensor path on the CPU, so a run here and
//! there differ only by rounding (the kernels are `medvae_runtime::ops::optim`). State is keyed by the parameter's full key; parameters that are
//! frozen, or that got no gradient this step, are left alone (as PyTorch skips `grad is None`).

use crate::layer::Parameters;
use medvae_runtime::checkpoint::{NamedTensor, StateDict};
use medvae_runtime::ops::optim::{AdamSettings, AdamUpdate};
use medvae_runtime::ops::reduce::count_non_finite_total;
use medvae_runtime::{Result, RuntimeError, Tensor};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
}

impl AdamConfig {
    /// The reference's optimizers: `Adam(lr, betas=(0.5, 0.9))`.
    pub fn medvae(lr: f32) -> AdamConfig {
        AdamConfig {
            lr,
            betas: (0.5, 0.9),
            eps: 1e-8,
        }
    }
}

#[derive(Debug, Clone)]
struct Moments {
    /// Steps taken by this parameter (PyTorch keeps `step` per parameter).
    step: u64,
    /// On the parameter's device.
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

#[derive(Debug, Clone)]
pub struct Adam {
    pub config: AdamConfig,
    state: BTreeMap<String, Moments>,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Adam {
        Adam {
            config,
            state: BTreeMap::new(),
        }
    }

    /// One update of every trainable parameter of `model` that holds a gradient, scaled by
    /// `grad_scale` first (1 / accumulation steps). A non-finite gradient is an error naming
    /// the parameter, and nothing is updated. Parameters on CUDA are updated by one
    /// multi-tensor launch; moments live on the parameter's device (restored state moves there
    /// on the first step).
    pub fn step(&mut self, model: &mut dyn Parameters, grad_scale: f32) -> Result<()> {
        // Host gradients are checked one by one (no wait involved); device gradients together,
        // one read-back per device (`count_non_finite_total`), and only when that finds
        // something are they searched one by one for the name.
        let mut bad = None;
        let mut on_devices = Vec::new();
        model.visit_params("", &mut |key, p| {
            let Some(g) = p.grad.as_ref() else {
                return;
            };
            if !g.device().is_cpu() {
                // A clone of a device tensor shares its buffer (dropped below, before the update).
                on_devices.push(g.clone());
            } else if bad.is_none() && g.has_non_finite() {
                bad = Some(key.to_string());
            }
        });
        let devices_bad = bad.is_none()
            && !on_devices.is_empty()
            && count_non_finite_total(&on_devices).map_or(true, |c| c > 0);
        drop(on_devices);
        if devices_bad {
            model.visit_params("", &mut |key, p| {
                if bad.is_none() && p.grad.as_ref().is_some_and(|g| g.has_non_finite()) {
                    bad = Some(key.to_string());
                }
            });
        }
        if let Some(key) = bad {
            return Err(RuntimeError::Other(format!(
                "non-finite gradient in `{key}`: the loss diverged (try a lower learning rate); \
                 no parameter was updated"
            )));
        }
        let AdamConfig {
            lr,
            betas: (beta1, beta2),
            eps,
        } = self.config;
        let mut update = AdamUpdate::new(AdamSettings {
            lr,
            beta1,
            beta2,
            eps,
            grad_scale,
        });
        let mut result = Ok(());
        model.visit_params("", &mut |key, p| {
            if result.is_err() || !p.trainable || p.kind.is_buffer() {
                return;
            }
            // Value and gradient are disjoint fields: update in place, no gradient copy.
            let crate::layer::Param { value, grad, .. } = p;
            let Some(grad) = grad.as_ref() else {
                return;
            };
            result = (|| -> Result<()> {
                let device = value.device();
                let st = match self.state.remove(key) {
                    Some(st) if st.exp_avg.numel() == value.numel() => Moments {
                        step: st.step,
                        exp_avg: st.exp_avg.into_device(device)?,
                        exp_avg_sq: st.exp_avg_sq.into_device(device)?,
                    },
                    _ => Moments {
                        step: 0,
                        exp_avg: Tensor::zeros_on(&[value.numel()], device)?,
                        exp_avg_sq: Tensor::zeros_on(&[value.numel()], device)?,
                    },
                };
                let st = self.state.entry(key.to_string()).or_insert(st);
                st.step += 1;
                update.add(value, grad, &mut st.exp_avg, &mut st.exp_avg_sq, st.step)
            })();
        });
        result?;
        update.finish()
    }

    /// The optimizer state as tensors `<prefix><key>.exp_avg`, `.exp_avg_sq`, `.step`.
    pub fn export(&self, prefix: &str, out: &mut StateDict) -> Result<()> {
        for (key, st) in &self.state {
            let n = st.exp_avg.numel();
            for (suffix, t) in [
                (
                    "exp_avg",
                    NamedTensor::from_f32(vec![n], st.exp_avg.to_f32_vec()),
                ),
                (
                    "exp_avg_sq",
                    NamedTensor::from_f32(vec![n], st.exp_avg_sq.to_f32_vec()),
                ),
                ("step", NamedTensor::from_f32(vec![], vec![st.step as f32])),
            ] {
                out.insert(format!("{prefix}{key}.{suffix}"), t)
                    .map_err(|e| RuntimeError::Other(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Restore the state written by [`Adam::export`] (other keys in `src` are ignored).
    pub fn import(&mut self, prefix: &str, src: &StateDict) -> Result<()> {
        self.state.clear();
        for (name, t) in src.iter() {
            let Some(key) = name
                .strip_prefix(prefix)
                .and_then(|k| k.strip_suffix(".exp_avg"))
            else {
                continue;
            };
            let get = |suffix: &str| -> Result<Vec<f32>> {
                src.get(&format!("{prefix}{key}.{suffix}"))
                    .and_then(|t| t.as_f32())
                    .map(<[f32]>::to_vec)
                    .ok_or_else(|| {
                        RuntimeError::Other(format!(
                            "optimizer state of `{key}` lacks `{suffix}` in {}",
                            src.source()
                        ))
                    })
            };
            let exp_avg = t.as_f32().map(<[f32]>::to_vec).unwrap_or_default();
            let exp_avg_sq = get("exp_avg_sq")?;
            let step = get("step")?.first().copied().unwrap_or(0.0) as u64;
            let n = exp_avg.len();
            if exp_avg_sq.len() != n {
                return Err(RuntimeError::Other(format!(
                    "optimizer state of `{key}` in {}: moment lengths differ",
                    src.source()
                )));
            }
            self.state.insert(
                key.to_string(),
                Moments {
                    step,
                    exp_avg: Tensor::from_vec(&[n], exp_avg)?,
                    exp_avg_sq: Tensor::from_vec(&[n], exp_avg_sq)?,
                },
            );
        }
        Ok(())
    }
}
