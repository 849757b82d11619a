//! Spatial self-attention on CUDA, one head over all positions, by one of two paths:
//! * flash-style kernels (no tokens² buffer; the log-sum-exp is kept in
//!   `AttentionSaved::device_lse`): FP32 precision, and any size;
//! * tensor-core GEMMs around a materialised probability matrix (kept in
//!   `AttentionSaved::device_probs`), as PyTorch's reference `AttnBlock` computes it: TF32/BF16
//!   precision when the `[N, T, T]` buffers fit [`GEMM_PATH_BYTES`]. MedVAE's attention has
//!   one head of 512 channels, where GEMMs run several times faster than the flash kernels.

use super::{device_of, on};
use crate::cuda::ops::attention::{self as k, AttnDims, AttnOperand};
use crate::cuda::ops::conv::ConvPrecision;
use crate::cuda::ops::gemm::{gemm, GemmLayout, MatRef};
use crate::cuda::ops::sample::{softmax_backward, softmax_forward};
use crate::cuda::registry::precision;
use crate::cuda::CudaDevice;
use crate::error::{Result, RuntimeError};
use crate::ops::attention::AttentionSaved;
use crate::tensor::Tensor;
use medvae_kernels::cpu::attention::AttentionDims;
use std::sync::OnceLock;

/// A dense `[batch, tokens, dim]` operand.
fn operand<'a>(op: &str, d: &AttentionDims, t: &'a Tensor) -> Result<AttnOperand<'a>> {
    Ok(AttnOperand::dense(t.cuda(op)?.1, d.tokens, d.dim))
}

fn attn_dims(d: &AttentionDims) -> AttnDims {
    AttnDims {
        batch: d.batch,
        heads: 1,
        tq: d.tokens,
        tk: d.tokens,
        head_dim: d.dim,
        scale: d.scale as f32,
    }
}

/// Largest total size of the `[N, T, T]` buffers (scores, probabilities, their gradient) the
/// GEMM path may allocate; bigger problems take the flash kernels.
pub(crate) const GEMM_PATH_BYTES: usize = 6 << 30;

/// Whether the GEMM path serves `d` in the current precision (`MEDVAE_ATTENTION=flash|gemm`
/// overrides, for benchmarks and tests). The `[N, T, T]` buffers may take at most
/// [`GEMM_PATH_BYTES`] and an eighth of the card's memory.
fn use_gemm_path(d: &AttentionDims, dev: &CudaDevice) -> bool {
    // Read once: this runs on every attention forward.
    static FORCED: OnceLock<Option<String>> = OnceLock::new();
    let forced = FORCED.get_or_init(|| std::env::var("MEDVAE_ATTENTION").ok());
    let tensor_cores = precision() != ConvPrecision::Fp32;
    let budget = GEMM_PATH_BYTES.min(dev.info().total_memory / 8);
    let fits = 3 * d.batch * d.tokens * d.tokens * 4 <= budget;
    // The GEMM path was verified (H200) only with token and channel counts that are multiples
    // of 8; other sizes keep the flash kernels.
    let aligned = d.tokens.is_multiple_of(8) && d.dim.is_multiple_of(8) && d.batch <= 65535;
    match forced.as_deref() {
        Some("flash") => false,
        Some("gemm") => tensor_cores && aligned,
        _ => tensor_cores && fits && aligned,
    }
}

/// `[T, D]` rows of one sample at batch stride `T·D`.
fn rows<'a>(op: &str, d: &AttentionDims, t: &'a Tensor) -> Result<MatRef<'a>> {
    Ok(MatRef::dense(t.cuda(op)?.1, d.dim, d.tokens * d.dim))
}

/// A `[T, T]` score-like matrix per sample.
fn square<'a>(op: &str, d: &AttentionDims, t: &'a Tensor) -> Result<MatRef<'a>> {
    Ok(MatRef::dense(t.cuda(op)?.1, d.tokens, d.tokens * d.tokens))
}

fn gemm_forward(
    op: &str,
    d: &AttentionDims,
    q: &Tensor,
    k_: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, AttentionSaved)> {
    let dev = device_of(op, q)?;
    let (t, dim, n) = (d.tokens, d.dim, d.batch);
    let prec = precision();
    let scores = Tensor::cuda_uninit(&dev, &[n, t, t])?;
    // S = scale · Q Kᵀ
    on(
        op,
        gemm(
            &dev,
            prec,
            GemmLayout::Nt,
            (t, t, dim, n),
            rows(op, d, q)?,
            rows(op, d, k_)?,
            square(op, d, &scores)?,
            None,
            d.scale as f32,
            0.0,
        ),
    )?;
    let probs = Tensor::cuda_uninit(&dev, &[n, t, t])?;
    on(
        op,
        softmax_forward(&dev, scores.cuda(op)?.1, probs.cuda(op)?.1, n * t, t),
    )?;
    drop(scores);
    // O = P V
    let o = Tensor::cuda_uninit(&dev, q.shape())?;
    on(
        op,
        gemm(
            &dev,
            prec,
            GemmLayout::Nn,
            (t, dim, t, n),
            square(op, d, &probs)?,
            rows(op, d, v)?,
            rows(op, d, &o)?,
            None,
            1.0,
            0.0,
        ),
    )?;
    let saved = AttentionSaved {
        lse: Vec::new(),
        device_lse: None,
        device_probs: Some(probs),
    };
    Ok((o, saved))
}

#[allow(clippy::too_many_arguments)]
fn gemm_backward(
    op: &str,
    d: &AttentionDims,
    q: &Tensor,
    k_: &Tensor,
    v: &Tensor,
    probs: &Tensor,
    d_o: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dev = device_of(op, q)?;
    let (t, dim, n) = (d.tokens, d.dim, d.batch);
    let prec = precision();
    let mm = |layout, mnk: (usize, usize, usize), a: MatRef, b: MatRef, c: MatRef, alpha: f32| {
        on(
            op,
            gemm(
                &dev,
                prec,
                layout,
                (mnk.0, mnk.1, mnk.2, n),
                a,
                b,
                c,
                None,
                alpha,
                0.0,
            ),
        )
    };
    // dV = Pᵀ dO
    let dv = Tensor::cuda_uninit(&dev, q.shape())?;
    mm(
        GemmLayout::Tn,
        (t, dim, t),
        square(op, d, probs)?,
        rows(op, d, d_o)?,
        rows(op, d, &dv)?,
        1.0,
    )?;
    // dP = dO Vᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)) (the softmax backward).
    let dp = Tensor::cuda_uninit(&dev, &[n, t, t])?;
    mm(
        GemmLayout::Nt,
        (t, t, dim),
        rows(op, d, d_o)?,
        rows(op, d, v)?,
        square(op, d, &dp)?,
        1.0,
    )?;
    let ds = Tensor::cuda_uninit(&dev, &[n, t, t])?;
    on(
        op,
        softmax_backward(
            &dev,
            probs.cuda(op)?.1,
            dp.cuda(op)?.1,
            ds.cuda(op)?.1,
            n * t,
            t,
            0.0,
        ),
    )?;
    drop(dp);
    // dQ = scale · dS K, dK = scale · dSᵀ Q
    let dq = Tensor::cuda_uninit(&dev, q.shape())?;
    mm(
        GemmLayout::Nn,
        (t, dim, t),
        square(op, d, &ds)?,
        rows(op, d, k_)?,
        rows(op, d, &dq)?,
        d.scale as f32,
    )?;
    let dk = Tensor::cuda_uninit(&dev, q.shape())?;
    mm(
        GemmLayout::Tn,
        (t, dim, t),
        square(op, d, &ds)?,
        rows(op, d, q)?,
        rows(op, d, &dk)?,
        d.scale as f32,
    )?;
    Ok((dq, dk, dv))
}

pub(crate) fn attention_forward(
    op: &str,
    d: &AttentionDims,
    q: &Tensor,
    k_: &Tensor,
    v: &Tensor,
) -> Result<(Tensor, AttentionSaved)> {
    let dev = device_of(op, q)?;
    if use_gemm_path(d, &dev) {
        return gemm_forward(op, d, q, k_, v);
    }
    let o = Tensor::cuda_uninit(&dev, q.shape())?;
    let lse = Tensor::cuda_uninit(&dev, &[d.lse_len()])?;
    on(
        op,
        k::attention_forward(
            &dev,
            &attn_dims(d),
            operand(op, d, q)?,
            operand(op, d, k_)?,
            operand(op, d, v)?,
            operand(op, d, &o)?,
            lse.cuda(op)?.1,
        ),
    )?;
    let saved = AttentionSaved {
        lse: Vec::new(),
        device_lse: Some(lse),
        device_probs: None,
    };
    Ok((o, saved))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    op: &str,
    d: &AttentionDims,
    q: &Tensor,
    k_: &Tensor,
    v: &Tensor,
    o: &Tensor,
    saved: &AttentionSaved,
    d_o: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    if let Some(probs) = &saved.device_probs {
        return gemm_backward(op, d, q, k_, v, probs, d_o);
    }
    let dev = device_of(op, q)?;
    let lse = saved.device_lse.as_ref().ok_or_else(|| {
        RuntimeError::Other(format!(
            "{op}: the saved log-sum-exp comes from a CPU forward, the gradient is on CUDA"
        ))
    })?;
    let dq = Tensor::cuda_uninit(&dev, q.shape())?;
    let dk = Tensor::cuda_uninit(&dev, q.shape())?;
    let dv = Tensor::cuda_uninit(&dev, q.shape())?;
    on(
        op,
        k::attention_backward(
            &dev,
            &attn_dims(d),
            operand(op, d, q)?,
            operand(op, d, k_)?,
            operand(op, d, v)?,
            operand(op, d, o)?,
            operand(op, d, d_o)?,
            lse.cuda(op)?.1,
            operand(op, d, &dq)?,
            operand(op, d, &dk)?,
            operand(op, d, &dv)?,
            0.0,
        ),
    )?;
    Ok((dq, dk, dv))
}
