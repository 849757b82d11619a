//! One Adam update of one parameter, as `torch.optim.Adam` (no weight decay, no amsgrad), with
//! the operation order of PyTorch's single-tensor path so the two differ only by rounding:
//!
//! ```text
//! m ← m + (g − m)(1 − β1)          (torch: m.lerp_(g, 1 − β1))
//! v ← β2·v + (1 − β2)·g²           (torch: v.mul_(β2).addcmul_(g, g, 1 − β2))
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```

use crate::error::check_len;
use crate::KernelError;
use rayon::prelude::*;

/// Hyper-parameters of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// The step count `t`, from 1.
    pub step: u64,
    /// Multiplies the gradient first (1 / accumulation steps).
    pub grad_scale: f32,
}

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// Update `param`, `m` and `v` in place from `grad`.
pub fn adam_update(
    s: &AdamStep,
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> Result<(), KernelError> {
    const K: &str = "adam_update";
    check_len(K, "grad", grad.len(), param.len())?;
    check_len(K, "exp_avg", m.len(), param.len())?;
    check_len(K, "exp_avg_sq", v.len(), param.len())?;
    if s.step == 0 {
        return Err(KernelError::Geometry {
            kernel: K,
            msg: "Adam steps count from 1".into(),
        });
    }
    let t = s.step.min(i32::MAX as u64) as i32;
    let bc1 = 1.0 - s.beta1.powi(t);
    let bc2_sqrt = (1.0 - s.beta2.powi(t)).sqrt();
    let step_size = s.lr / bc1;
    let (b1, b2, eps, gs) = (s.beta1, s.beta2, s.eps, s.grad_scale);
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let gi = g[i] * gs;
                m[i] += (gi - m[i]) * (1.0 - b1);
                v[i] = v[i] * b2 + (1.0 - b2) * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] -= step_size * (m[i] / denom);
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the formula in f64 over three steps (the bias corrections change each step).
    #[test]
    fn matches_the_formula_over_steps() {
        let n = 40_000; // more than one chunk
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let (mut p, mut m, mut v) = (vec![0.5f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        let (mut ep, mut em, mut ev) = (vec![0.5f64; n], vec![0.0f64; n], vec![0.0f64; n]);
        for step in 1..=3u64 {
            let s = AdamStep {
                lr: 1e-2,
                beta1: 0.5,
                beta2: 0.9,
                eps: 1e-8,
                step,
                grad_scale: 0.5,
            };
            adam_update(&s, &mut p, &g, &mut m, &mut v).unwrap();
            let (bc1, bc2) = (
                1.0 - 0.5f64.powi(step as i32),
                1.0 - 0.9f64.powi(step as i32),
            );
            for i in 0..n {
                let gi = g[i] as f64 * 0.5;
                em[i] = 0.5 * em[i] + 0.5 * gi;
                ev[i] = 0.9 * ev[i] + 0.1 * gi * gi;
                ep[i] -= 1e-2 / bc1 * em[i] / (ev[i].sqrt() / bc2.sqrt() + 1e-8);
            }
        }
        for i in (0..n).step_by(997) {
            assert!(
                (p[i] as f64 - ep[i]).abs() < 1e-5,
                "p[{i}] {} vs {}",
                p[i],
                ep[i]
            );
            assert!((m[i] as f64 - em[i]).abs() < 1e-5 * (1.0 + em[i].abs()));
        }
        let mut short = vec![0.0f32; 3];
        assert!(adam_update(
            &AdamStep {
                lr: 1.0,
                beta1: 0.5,
                beta2: 0.9,
                eps: 1e-8,
                step: 1,
                grad_scale: 1.0
            },
            &mut p,
            &g,
            &mut short,
            &mut v
        )
        .is_err());
    }
}
