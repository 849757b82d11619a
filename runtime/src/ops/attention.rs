//! Single-head attention over all spatial positions (the core of MedVAE's `AttnBlock`):
//! `o = softmax(q·kᵀ·scale)·v` per sample, tokens = the `D·H·W` positions of channels-last
//! activations, features = channels. Flash-style kernels: no `tokens × tokens` buffer.

use super::{common_device, cpu_only, split_nsc};
use crate::error::{Result, RuntimeError};
use crate::tensor::Tensor;
use medvae_kernels::cpu::attention as k;
use medvae_kernels::volume;

/// What the forward keeps for the backward: the log-sum-exp of each query's scaled scores,
/// `[N, tokens]` (the output `o` itself is passed to the backward separately).
#[derive(Debug, Clone)]
pub struct AttentionSaved {
    pub lse: Vec<f32>,
    /// The log-sum-exp of a CUDA flash forward, kept on the device (`lse` is then empty).
    pub device_lse: Option<Tensor>,
    /// The `[N, T, T]` probabilities of a CUDA GEMM-path forward (see `on_cuda::attention`).
    pub device_probs: Option<Tensor>,
}

/// Kernel geometry from `q`'s shape, after checking `k` and `v` have the same shape.
fn dims(op: &str, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<k::AttentionDims> {
    let (n, s, c) = split_nsc(op, q.shape())?;
    k.expect_shape(op, "k", q.shape())?;
    v.expect_shape(op, "v", q.shape())?;
    Ok(k::AttentionDims {
        batch: n,
        tokens: volume(s),
        dim: c,
        scale,
    })
}

/// `o = softmax(q·kᵀ·scale)·v` over the spatial positions of each sample; `q`, `k`, `v`:
/// `[N, H, W, C]` or `[N, D, H, W, C]`, all the same shape. MedVAE uses `scale = C^-½`.
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<(Tensor, AttentionSaved)> {
    const OP: &str = "attention_forward";
    let dev = common_device(OP, &[q, k, v])?;
    let d = dims(OP, q, k, v, scale)?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::attention::attention_forward(OP, &d, q, k, v);
    }
    let _timer = cpu_only(OP, dev)?;
    let mut o = Tensor::uninit(q.shape());
    let mut lse = vec![0f32; d.lse_len()];
    k::attention_forward(
        &d,
        q.f32s(OP)?,
        k.f32s(OP)?,
        v.f32s(OP)?,
        o.f32s_mut(OP)?,
        &mut lse,
    )?;
    Ok((
        o,
        AttentionSaved {
            lse,
            device_lse: None,
            device_probs: None,
        },
    ))
}

/// Gradients `(dq, dk, dv)` of [`attention_forward`] from its inputs, output `o`, saved
/// state and the upstream gradient `d_o`.
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    saved: &AttentionSaved,
    d_o: &Tensor,
    scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention_backward";
    let dev = common_device(OP, &[q, k, v, o, d_o])?;
    let d = dims(OP, q, k, v, scale)?;
    o.expect_shape(OP, "o", q.shape())?;
    d_o.expect_shape(OP, "d_o", q.shape())?;
    #[cfg(feature = "cuda")]
    if !dev.is_cpu() {
        return super::on_cuda::attention::attention_backward(OP, &d, q, k, v, o, saved, d_o);
    }
    let _timer = cpu_only(OP, dev)?;
    if saved.lse.len() != d.lse_len() {
        return Err(RuntimeError::shape(
            OP,
            format!(
                "saved log-sum-exp has {} values, {:?} needs {}",
                saved.lse.len(),
                q.shape(),
                d.lse_len()
            ),
        ));
    }
    let mut dq = Tensor::uninit(q.shape());
    let mut dk = Tensor::uninit(q.shape());
    let mut dv = Tensor::uninit(q.shape());
    k::attention_backward(
        &d,
        q.f32s(OP)?,
        k.f32s(OP)?,
        v.f32s(OP)?,
        o.f32s(OP)?,
        &saved.lse,
        d_o.f32s(OP)?,
        dq.f32s_mut(OP)?,
        dk.f32s_mut(OP)?,
        dv.f32s_mut(OP)?,
    )?;
    Ok((dq, dk, dv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(shape: &[usize], step: f32) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|i| ((i as f32) * step).sin()).collect()).unwrap()
    }

    #[test]
    fn tokens_are_spatial_positions_and_channels_are_features() {
        // [N=1, H=2, W=3, C=2]: 6 tokens of 2 features; one query compared by hand.
        let shape = [1, 2, 3, 2];
        let (q, k, v) = (ramp(&shape, 0.7), ramp(&shape, 1.3), ramp(&shape, 0.4));
        let scale = 0.5f64.sqrt();
        let (o, saved) = attention_forward(&q, &k, &v, scale).unwrap();
        assert_eq!(o.shape(), &shape);
        assert_eq!(saved.lse.len(), 6);
        let (qv, kv, vv, ov) = (
            q.to_f32_vec(),
            k.to_f32_vec(),
            v.to_f32_vec(),
            o.to_f32_vec(),
        );
        let i = 4;
        let s: Vec<f64> = (0..6)
            .map(|j| (qv[2 * i] * kv[2 * j] + qv[2 * i + 1] * kv[2 * j + 1]) as f64 * scale)
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for c in 0..2 {
            let want: f64 = (0..6)
                .map(|j| (s[j] - m).exp() / z * vv[2 * j + c] as f64)
                .sum();
            assert!((ov[2 * i + c] as f64 - want).abs() < 1e-6, "channel {c}");
        }
        assert!((saved.lse[i] as f64 - (m + z.ln())).abs() < 1e-6);
    }

    #[test]
    fn backward_shapes_and_errors() {
        let shape = [2, 2, 2, 3, 4];
        let (q, k, v, g) = (
            ramp(&shape, 0.3),
            ramp(&shape, 0.5),
            ramp(&shape, 0.9),
            ramp(&shape, 1.1),
        );
        let (o, saved) = attention_forward(&q, &k, &v, 0.5).unwrap();
        let (dq, dk, dv) = attention_backward(&q, &k, &v, &o, &saved, &g, 0.5).unwrap();
        for t in [&dq, &dk, &dv] {
            assert_eq!(t.shape(), &shape);
            assert!(!t.has_non_finite());
        }
        // Mismatched shapes, a bad rank and stale saved state are errors, not panics.
        let other = ramp(&[2, 2, 2, 3, 5], 0.1);
        assert!(attention_forward(&q, &other, &v, 0.5).is_err());
        assert!(attention_forward(&q, &k, &other, 0.5).is_err());
        assert!(attention_forward(
            &ramp(&[4, 4], 0.1),
            &ramp(&[4, 4], 0.1),
            &ramp(&[4, 4], 0.1),
            0.5
        )
        .is_err());
        assert!(attention_backward(&q, &k, &v, &o, &saved, &other, 0.5).is_err());
        let stale = AttentionSaved {
            lse: saved.lse[1..].to_vec(),
            device_lse: None,
            device_probs: None,
        };
        assert!(attention_backward(&q, &k, &v, &o, &stale, &g, 0.5).is_err());
    }
}
