//! Adam, as `torch.optim.Adam` (no weight decay, no amsgrad): per parameter
//!
//! ```text
//! m ← β1·m + (1 − β1)·g        v ← β2·v + (1 − β2)·g²
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! with the same operation order as PyTorch's single-tensor path, so a run here and there
//! differ only by rounding. State is keyed by the parameter's full key; parameters that are
//! frozen, or that got no gradient this step, are left alone (as PyTorch skips `grad is None`).

use crate::layer::Parameters;
use medvae_runtime::checkpoint::{NamedTensor, StateDict};
use medvae_runtime::{Result, RuntimeError};
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

#[derive(Debug, Clone, Default, PartialEq)]
struct Moments {
    /// Steps taken by this parameter (PyTorch keeps `step` per parameter).
    step: u64,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
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
    /// the parameter, and nothing is updated.
    pub fn step(&mut self, model: &mut dyn Parameters, grad_scale: f32) -> Result<()> {
        let mut bad = None;
        model.visit_params("", &mut |key, p| {
            if bad.is_none() && p.grad.as_ref().is_some_and(|g| g.has_non_finite()) {
                bad = Some(key.to_string());
            }
        });
        if let Some(key) = bad {
            return Err(RuntimeError::Other(format!(
                "non-finite gradient in `{key}`: the loss diverged (try a lower learning rate); \
                 no parameter was updated"
            )));
        }
        let AdamConfig {
            lr,
            betas: (b1, b2),
            eps,
        } = self.config;
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
            let g = match grad.f32s("adam") {
                Ok(g) => g,
                Err(e) => {
                    result = Err(e);
                    return;
                }
            };
            let st = self.state.entry(key.to_string()).or_default();
            if st.exp_avg.len() != g.len() {
                st.exp_avg = vec![0.0; g.len()];
                st.exp_avg_sq = vec![0.0; g.len()];
                st.step = 0;
            }
            st.step += 1;
            let t = st.step as i32;
            let bc1 = 1.0 - b1.powi(t);
            let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
            let step_size = lr / bc1;
            let values = match value.f32s_mut("adam") {
                Ok(v) => v,
                Err(e) => {
                    result = Err(e);
                    return;
                }
            };
            for i in 0..g.len() {
                let gi = g[i] * grad_scale;
                let m = &mut st.exp_avg[i];
                let v = &mut st.exp_avg_sq[i];
                // torch: m.lerp_(g, 1 − β1); v.mul_(β2).addcmul_(g, g, 1 − β2).
                *m += (gi - *m) * (1.0 - b1);
                *v = *v * b2 + (1.0 - b2) * gi * gi;
                let denom = v.sqrt() / bc2_sqrt + eps;
                values[i] -= step_size * (*m / denom);
            }
        });
        result
    }

    /// The optimizer state as tensors `<prefix><key>.exp_avg`, `.exp_avg_sq`, `.step`.
    pub fn export(&self, prefix: &str, out: &mut StateDict) -> Result<()> {
        for (key, st) in &self.state {
            let n = st.exp_avg.len();
            for (suffix, t) in [
                (
                    "exp_avg",
                    NamedTensor::from_f32(vec![n], st.exp_avg.clone()),
                ),
                (
                    "exp_avg_sq",
                    NamedTensor::from_f32(vec![n], st.exp_avg_sq.clone()),
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
            if exp_avg_sq.len() != exp_avg.len() {
                return Err(RuntimeError::Other(format!(
                    "optimizer state of `{key}` in {}: moment lengths differ",
                    src.source()
                )));
            }
            self.state.insert(
                key.to_string(),
                Moments {
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        Ok(())
    }
}
