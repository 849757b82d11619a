//! Single-head scaled dot-product attention over all spatial positions (MedVAE's `AttnBlock`
//! core), forward and backward, FlashAttention-2 style: queries and keys are processed in
//! tiles with an online softmax, so memory stays `O(tokens·dim + tiles)` and the
//! `tokens × tokens` score matrix is never formed (a 96² latent has 9,216 tokens, a 3D
//! volume many more).
//!
//! Per batch entry, with `q, k, v, o` stored `[tokens, dim]` row-major:
//! `o = softmax(q·kᵀ·scale)·v`, the softmax running over keys (each query row sums to one).
//! This is exactly `AttnBlock.forward` of the reference, which computes
//! `w_[i, j] = Σ_c q[c, i]·k[c, j]·c^-½`, softmaxes over `j` and forms `h_[c, i] = Σ_j v[c, j]·w_[i, j]`.
//!
//! The forward saves `lse` (log-sum-exp of each query row's scaled scores); the backward
//! recomputes the probabilities `P = exp(S − lse)` tile by tile.
//!
//! Two engines compute the same thing ([`Engine`]): f32 on x86-64 with AVX2+FMA runs
//! `fast` (a hand-written microkernel on operands packed once per call; about 1.3–1.6× the
//! portable speed), everything else the portable tiles on the `gemm` crate. Extra memory, as
//! multiples of one `[batch, tokens, dim]` operand: forward 1 (portable) or 2 (fast) packed
//! or transposed copies; backward 2 (portable) or 4 (fast), plus the fused schedule's private
//! `dq` buffers (see [`BackwardSchedule`]).

mod backward;
#[cfg(target_arch = "x86_64")]
mod fast;
mod forward;
mod tile;

use crate::error::check_len;
use crate::{KernelError, Real};
use std::any::TypeId;

/// Geometry of an attention call: `batch` independent sequences of `tokens` vectors of
/// length `dim`; scores are scaled by `scale` (`dim^-½` in MedVAE).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDims {
    pub batch: usize,
    pub tokens: usize,
    pub dim: usize,
    pub scale: f64,
}

impl AttentionDims {
    /// Elements of each of `q`, `k`, `v`, `o` (and their gradients).
    pub fn len(&self) -> usize {
        self.batch * self.tokens * self.dim
    }

    /// Whether there is nothing to compute.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements of the saved log-sum-exp, one per query row.
    pub fn lse_len(&self) -> usize {
        self.batch * self.tokens
    }
}

/// How the backward distributes the key-side work (see [`AttentionPlan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackwardSchedule {
    /// [`BackwardSchedule::Fused`] with enough partitions for two equal tasks per rayon
    /// thread (one per thread, or [`BackwardSchedule::TwoPass`], where the private `dq`
    /// buffers would exceed [`FUSED_PARTIAL_BUDGET`]).
    Auto,
    /// One pass over (key tile, query tile) pairs doing all five products; the keys of each
    /// batch entry are split into `partitions` contiguous ranges processed in parallel, each
    /// accumulating its own `tokens × dim` partial `dq` (partitions − 1 extra buffers per
    /// batch entry in the portable engine, `partitions` in the fast one), summed at the end
    /// in a fixed order. The portable engine only; the fast one is always fused.
    Fused { partitions: usize },
    /// `dk`, `dv` in a pass parallel over key tiles, then `dq` in a pass parallel over query
    /// tiles: no extra memory, any parallelism, but the scores and `dO·Vᵀ` are computed twice
    /// (seven tile products instead of five). Runs on the portable engine.
    TwoPass,
}

/// Which implementation runs an f32 call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The AVX2+FMA f32 engine where the CPU has it (f64 always runs portable).
    Auto,
    /// The portable implementation on the `gemm` crate (any CPU, f32 and f64).
    Portable,
}

/// Tile sizes, backward schedule and engine. [`AttentionPlan::default`] suits production;
/// tests use tiny tiles to exercise the tiling on small inputs. The fast engine rounds tile
/// sizes up to its panel multiples (16 or 48 query rows, 6 or 16 keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionPlan {
    /// Query rows per tile (per rayon task in the forward).
    pub query_tile: usize,
    /// Key rows per tile (columns of each score tile).
    pub key_tile: usize,
    pub backward: BackwardSchedule,
    pub engine: Engine,
}

impl Default for AttentionPlan {
    fn default() -> Self {
        AttentionPlan {
            query_tile: 128,
            key_tile: 256,
            backward: BackwardSchedule::Auto,
            engine: Engine::Auto,
        }
    }
}

/// `x` as f32 when `T` is f32 (the fast engine's element type).
#[cfg(target_arch = "x86_64")]
fn as_f32<T: Real>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same type, so same size, alignment and validity).
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
}

/// `x` as mutable f32 when `T` is f32.
#[cfg(target_arch = "x86_64")]
fn as_f32_mut<T: Real>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`; the borrow of `x` moves into the result.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f32>(), x.len()) })
}

/// Whether f32 calls with [`Engine::Auto`] run the fast engine on this CPU.
pub fn fast_engine_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        fast::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the fast engine runs this call.
fn use_fast<T: Real>(plan: &AttentionPlan) -> bool {
    plan.engine == Engine::Auto
        && TypeId::of::<T>() == TypeId::of::<f32>()
        && fast_engine_available()
}

/// Most elements [`BackwardSchedule::Auto`] lets the fused backward spend on private `dq`
/// buffers before it uses fewer partitions or [`BackwardSchedule::TwoPass`] (64 Mi elements:
/// 256 MiB in f32).
pub const FUSED_PARTIAL_BUDGET: usize = 1 << 26;

/// Checks shared by forward and backward: element type, geometry, plan.
fn validate<T: Real>(
    kernel: &'static str,
    d: &AttentionDims,
    plan: &AttentionPlan,
) -> Result<(), KernelError> {
    let bad = |msg: String| Err(KernelError::Geometry { kernel, msg });
    if TypeId::of::<T>() != TypeId::of::<f32>() && TypeId::of::<T>() != TypeId::of::<f64>() {
        return bad(format!(
            "unsupported element type {}",
            std::any::type_name::<T>()
        ));
    }
    if d.dim == 0 {
        return bad("dim must be positive (the reference scale dim^-½ is undefined at 0)".into());
    }
    if !d.scale.is_finite() {
        return bad(format!("scale {} is not finite", d.scale));
    }
    if d.batch
        .checked_mul(d.tokens)
        .and_then(|v| v.checked_mul(d.dim))
        .is_none()
    {
        return bad(format!("{d:?} overflows usize"));
    }
    if plan.query_tile == 0 || plan.key_tile == 0 {
        return bad(format!("tile sizes must be positive, got {plan:?}"));
    }
    if let BackwardSchedule::Fused { partitions: 0 } = plan.backward {
        return bad("a fused backward needs at least one partition".into());
    }
    Ok(())
}

/// `o = softmax(q·kᵀ·scale)·v` per batch entry; `lse` receives each query row's
/// log-sum-exp of scaled scores. `q, k, v, o`: `[batch, tokens, dim]`, `lse`: `[batch, tokens]`.
pub fn attention_forward<T: Real>(
    d: &AttentionDims,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
) -> Result<(), KernelError> {
    attention_forward_with(&AttentionPlan::default(), d, q, k, v, o, lse)
}

/// [`attention_forward`] with explicit tile sizes.
pub fn attention_forward_with<T: Real>(
    plan: &AttentionPlan,
    d: &AttentionDims,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &mut [T],
    lse: &mut [T],
) -> Result<(), KernelError> {
    const KERNEL: &str = "attention_forward";
    validate::<T>(KERNEL, d, plan)?;
    check_len(KERNEL, "q", q.len(), d.len())?;
    check_len(KERNEL, "k", k.len(), d.len())?;
    check_len(KERNEL, "v", v.len(), d.len())?;
    check_len(KERNEL, "o", o.len(), d.len())?;
    check_len(KERNEL, "lse", lse.len(), d.lse_len())?;
    if d.is_empty() {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if use_fast::<T>(plan) {
        if let (Some(q), Some(k), Some(v), Some(o), Some(lse)) = (
            as_f32(q),
            as_f32(k),
            as_f32(v),
            as_f32_mut(o),
            as_f32_mut(lse),
        ) {
            let tiles = fast::forward_tiles(forward::effective_query_tile(plan, d), plan.key_tile);
            fast::forward(tiles, d, q, k, v, o, lse);
            return Ok(());
        }
    }
    forward::forward(plan, d, q, k, v, o, lse);
    Ok(())
}

/// Gradients of [`attention_forward`] from its inputs, output `o`, saved `lse` and the
/// upstream gradient `d_o`: overwrites `dq`, `dk`, `dv`.
///
/// FlashAttention-2: `D_i = Σ_c dO_ic·O_ic`; per tile `P = exp(S − lse)`, `dV += Pᵀ·dO`,
/// `dP = dO·Vᵀ`, `dS = P ∘ (dP − D)`, `dQ += dS·K·scale`, `dK += dSᵀ·Q·scale`.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Real>(
    d: &AttentionDims,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    lse: &[T],
    d_o: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) -> Result<(), KernelError> {
    attention_backward_with(
        &AttentionPlan::default(),
        d,
        q,
        k,
        v,
        o,
        lse,
        d_o,
        dq,
        dk,
        dv,
    )
}

/// [`attention_backward`] with explicit tile sizes and schedule.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with<T: Real>(
    plan: &AttentionPlan,
    d: &AttentionDims,
    q: &[T],
    k: &[T],
    v: &[T],
    o: &[T],
    lse: &[T],
    d_o: &[T],
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) -> Result<(), KernelError> {
    const KERNEL: &str = "attention_backward";
    validate::<T>(KERNEL, d, plan)?;
    for (what, len) in [
        ("q", q.len()),
        ("k", k.len()),
        ("v", v.len()),
        ("o", o.len()),
        ("d_o", d_o.len()),
    ] {
        check_len(KERNEL, what, len, d.len())?;
    }
    check_len(KERNEL, "lse", lse.len(), d.lse_len())?;
    check_len(KERNEL, "dq", dq.len(), d.len())?;
    check_len(KERNEL, "dk", dk.len(), d.len())?;
    check_len(KERNEL, "dv", dv.len(), d.len())?;
    if d.is_empty() {
        return Ok(());
    }
    let delta = backward::row_dots(o, d_o, d.dim);
    let schedule = backward::resolve_schedule(plan, d);
    #[cfg(target_arch = "x86_64")]
    if let (true, BackwardSchedule::Fused { partitions }) = (use_fast::<T>(plan), schedule) {
        let partitions = partitions.min(d.tokens);
        if let (Some(q), Some(k), Some(v), Some(d_o), Some(lse), Some(delta)) = (
            as_f32(q),
            as_f32(k),
            as_f32(v),
            as_f32(d_o),
            as_f32(lse),
            as_f32(&delta),
        ) {
            if let (Some(dq), Some(dk), Some(dv)) = (as_f32_mut(dq), as_f32_mut(dk), as_f32_mut(dv))
            {
                let tiles =
                    fast::backward_tiles(forward::effective_query_tile(plan, d), plan.key_tile);
                let inputs = fast::FastInputs {
                    q,
                    k,
                    v,
                    d_o,
                    lse,
                    delta,
                };
                fast::backward(tiles, partitions, d, &inputs, dq, dk, dv);
                return Ok(());
            }
        }
    }
    let inputs = backward::Inputs {
        q,
        k,
        v,
        lse,
        d_o,
        delta: &delta,
    };
    backward::backward(plan, schedule, d, &inputs, dq, dk, dv);
    Ok(())
}
