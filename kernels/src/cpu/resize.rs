//! Antialiased bicubic resize of 2D images, forward and backward, with the semantics of
//! `torch.nn.functional.interpolate(x, size, mode="bicubic", antialias=True,
//! align_corners=False)` — which is what `torchvision.transforms.Resize(size, BICUBIC,
//! antialias=True)` runs on float tensors.
//!
//! The map is separable: every output index along an axis is a normalised weighted sum of a
//! contiguous run of input indices. PyTorch's antialiased path (`upsample_bicubic2d_aa`,
//! `aten/src/ATen/native/cpu/UpSampleKernel.cpp`, `HelperInterpCubic::aa_filter`) differs from
//! plain bicubic interpolation in three ways that all matter for matching it:
//! * the cubic kernel uses `a = -0.5` (Keys / PIL), not the `a = -0.75` of the non-AA path;
//! * when downscaling by `scale = in / out > 1` the kernel is stretched by `scale` (support
//!   `2 · scale` instead of 2), which is the antialiasing low-pass;
//! * taps that would fall outside the image are dropped and the remaining weights renormalised
//!   to sum to one (no border replication), in both directions of scaling.
//!
//! Layout is channels-last `[N, H, W, C]` (the `[N, D, H, W, C]` convention with `D = 1`). The
//! width axis is resampled first, then the height axis, as PyTorch does; an axis whose size does
//! not change is skipped (PyTorch skips it too, and its weights would be the identity anyway).
//! The backward pass is the transpose of the same linear map, applied through transposed
//! (input-major) weight tables so that it is a parallel gather rather than a scatter.

use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

const KERNEL: &str = "resize_bicubic_aa";

/// Keys' cubic convolution coefficient used by PyTorch's (and PIL's) antialiased bicubic filter.
const CUBIC_A: f64 = -0.5;

/// Number of taps of the unstretched bicubic kernel (support ±2).
const CUBIC_TAPS: f64 = 4.0;

/// Values per rayon task: small rows are grouped so that scheduling cost stays negligible.
const VALUES_PER_TASK: usize = 8192;

/// The antialiasing bicubic filter, `W(x)` with `a = -0.5`, zero for `|x| >= 2`.
fn cubic_filter(x: f64) -> f64 {
    let x = x.abs();
    let a = CUBIC_A;
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// One axis of a separable linear resampling map, stored as a sparse gather table (CSR): the
/// destination index `i` reads source indices `source[offsets[i]..offsets[i + 1]]` with the
/// matching `weights`. Forward tables are output-major; transposed tables are input-major.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisWeights {
    source_len: usize,
    dest_len: usize,
    offsets: Vec<usize>,
    source: Vec<usize>,
    weights: Vec<f64>,
}

impl AxisWeights {
    /// PyTorch's antialiased bicubic weights for resampling `in_len` samples to `out_len`
    /// (`_compute_indices_min_size_weights_aa`, computed here in f64).
    fn bicubic_aa(in_len: usize, out_len: usize) -> Self {
        let scale = in_len as f64 / out_len as f64;
        // Downscaling stretches the kernel by `scale`; upscaling keeps the plain kernel.
        let (support, inv_scale) = if scale >= 1.0 {
            (CUBIC_TAPS * 0.5 * scale, 1.0 / scale)
        } else {
            (CUBIC_TAPS * 0.5, 1.0)
        };
        let mut offsets = Vec::with_capacity(out_len + 1);
        let mut source = Vec::new();
        let mut weights = Vec::new();
        offsets.push(0);
        for i in 0..out_len {
            let center = scale * (i as f64 + 0.5);
            // `as i64` truncates toward zero, exactly like PyTorch's static_cast<int64_t>.
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).clamp(0, in_len as i64) as usize;
            let start = weights.len();
            for j in first..end {
                source.push(j);
                weights.push(cubic_filter((j as f64 - center + 0.5) * inv_scale));
            }
            // Out-of-image taps were dropped: renormalise what is left (PyTorch leaves an
            // all-zero-sum row alone rather than dividing by zero).
            let total: f64 = weights[start..].iter().sum();
            if total != 0.0 {
                weights[start..].iter_mut().for_each(|w| *w /= total);
            }
            offsets.push(weights.len());
        }
        Self {
            source_len: in_len,
            dest_len: out_len,
            offsets,
            source,
            weights,
        }
    }

    /// The transposed map (destination and source swapped), as an input-major gather table.
    fn transposed(&self) -> Self {
        let mut counts = vec![0usize; self.source_len + 1];
        for &s in &self.source {
            counts[s + 1] += 1;
        }
        for k in 1..counts.len() {
            counts[k] += counts[k - 1];
        }
        let offsets = counts.clone();
        let mut cursor = counts;
        let mut source = vec![0usize; self.source.len()];
        let mut weights = vec![0f64; self.weights.len()];
        for d in 0..self.dest_len {
            for t in self.offsets[d]..self.offsets[d + 1] {
                let s = self.source[t];
                source[cursor[s]] = d;
                weights[cursor[s]] = self.weights[t];
                cursor[s] += 1;
            }
        }
        Self {
            source_len: self.dest_len,
            dest_len: self.source_len,
            offsets,
            source,
            weights,
        }
    }

    /// Length of the axis this table reads from.
    pub fn source_len(&self) -> usize {
        self.source_len
    }
    /// Length of the axis this table writes.
    pub fn dest_len(&self) -> usize {
        self.dest_len
    }
    /// CSR row starts, `dest_len + 1` entries.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }
    /// Source index of every tap.
    pub fn source(&self) -> &[usize] {
        &self.source
    }
    /// Weight of every tap (f64; kernels round them to their element type).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
    /// Largest number of taps of any destination index.
    pub fn max_taps(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// Precomputed weight tables for resizing `[h, w]` images to `[out_h, out_w]`; build once per
/// geometry and reuse for every batch (forward and backward).
#[derive(Debug, Clone, PartialEq)]
pub struct ResizePlan {
    in_hw: [usize; 2],
    out_hw: [usize; 2],
    rows: AxisWeights,
    cols: AxisWeights,
    rows_t: AxisWeights,
    cols_t: AxisWeights,
}

impl ResizePlan {
    /// Antialiased bicubic resize (`interpolate(..., mode="bicubic", antialias=True,
    /// align_corners=False)`) from `in_hw` to `out_hw`. Every extent must be at least 1.
    pub fn bicubic_aa(in_hw: [usize; 2], out_hw: [usize; 2]) -> Result<Self, KernelError> {
        if in_hw.contains(&0) || out_hw.contains(&0) {
            return Err(KernelError::Geometry {
                kernel: KERNEL,
                msg: format!("cannot resize {in_hw:?} to {out_hw:?}: every extent must be >= 1"),
            });
        }
        let rows = AxisWeights::bicubic_aa(in_hw[0], out_hw[0]);
        let cols = AxisWeights::bicubic_aa(in_hw[1], out_hw[1]);
        Ok(Self {
            in_hw,
            out_hw,
            rows_t: rows.transposed(),
            cols_t: cols.transposed(),
            rows,
            cols,
        })
    }

    /// Input extent `[h, w]`.
    pub fn in_hw(&self) -> [usize; 2] {
        self.in_hw
    }
    /// Output extent `[h, w]`.
    pub fn out_hw(&self) -> [usize; 2] {
        self.out_hw
    }
    /// Forward weights along the height axis (output-major).
    pub fn height_weights(&self) -> &AxisWeights {
        &self.rows
    }
    /// Forward weights along the width axis (output-major).
    pub fn width_weights(&self) -> &AxisWeights {
        &self.cols
    }
}

/// `n · h · w · c` with overflow reported as a geometry error.
fn element_count(n: usize, hw: [usize; 2], c: usize) -> Result<usize, KernelError> {
    n.checked_mul(hw[0])
        .and_then(|v| v.checked_mul(hw[1]))
        .and_then(|v| v.checked_mul(c))
        .ok_or_else(|| KernelError::Geometry {
            kernel: KERNEL,
            msg: format!("tensor [{n}, {}, {}, {c}] is too large", hw[0], hw[1]),
        })
}

/// Resample the innermost spatial axis (width): `src` is rows of `source_len · c` values, `dst`
/// the same number of rows of `dest_len · c` values.
fn apply_inner<T: Real>(map: &AxisWeights, c: usize, src: &[T], dst: &mut [T]) {
    let src_row = map.source_len * c;
    let dst_row = map.dest_len * c;
    if dst_row == 0 || src_row == 0 {
        return;
    }
    let weights: Vec<T> = map.weights.iter().map(|&w| T::c(w)).collect();
    let rows_per_task = (VALUES_PER_TASK / dst_row).max(1);
    dst.par_chunks_mut(dst_row)
        .zip(src.par_chunks(src_row))
        .with_min_len(rows_per_task)
        .for_each(|(out_row, in_row)| {
            for (d, out) in out_row.chunks_exact_mut(c).enumerate() {
                let taps = map.offsets[d]..map.offsets[d + 1];
                let taps = map.source[taps.clone()].iter().zip(&weights[taps]);
                if c == 1 {
                    // Single channel (the common greyscale case): a plain dot product.
                    out[0] = taps.fold(T::zero(), |acc, (&s, &w)| acc + w * in_row[s]);
                    continue;
                }
                out.fill(T::zero());
                for (&s, &w) in taps {
                    for (o, &v) in out.iter_mut().zip(&in_row[s * c..(s + 1) * c]) {
                        *o += w * v;
                    }
                }
            }
        });
}

/// Resample the outer spatial axis (height) of `n` images: every destination row (of `row_len`
/// values) is a weighted sum of whole source rows, which vectorises along the row.
fn apply_outer<T: Real>(map: &AxisWeights, row_len: usize, src: &[T], dst: &mut [T]) {
    if row_len == 0 || map.dest_len == 0 {
        return;
    }
    let weights: Vec<T> = map.weights.iter().map(|&w| T::c(w)).collect();
    let rows_per_task = (VALUES_PER_TASK / row_len).max(1);
    dst.par_chunks_mut(row_len)
        .enumerate()
        .with_min_len(rows_per_task)
        .for_each(|(k, out)| {
            let image = k / map.dest_len;
            let d = k % map.dest_len;
            out.fill(T::zero());
            let taps = map.offsets[d]..map.offsets[d + 1];
            for (&row, &w) in map.source[taps.clone()].iter().zip(&weights[taps]) {
                let s = (image * map.source_len + row) * row_len;
                for (o, &v) in out.iter_mut().zip(&src[s..s + row_len]) {
                    *o += w * v;
                }
            }
        });
}

/// Apply a separable map: first `inner` along the width axis, then `outer` along the height
/// axis (either may be `None` when that extent does not change).
fn apply_separable<T: Real>(
    inner: Option<&AxisWeights>,
    outer: Option<&AxisWeights>,
    n: usize,
    c: usize,
    src_hw: [usize; 2],
    src: &[T],
    dst: &mut [T],
) {
    match (inner, outer) {
        (None, None) => dst.copy_from_slice(src),
        (Some(inner), None) => apply_inner(inner, c, src, dst),
        (None, Some(outer)) => apply_outer(outer, src_hw[1] * c, src, dst),
        (Some(inner), Some(outer)) => {
            let mut mid = vec![T::zero(); n * src_hw[0] * inner.dest_len * c];
            apply_inner(inner, c, src, &mut mid);
            apply_outer(outer, inner.dest_len * c, &mid, dst);
        }
    }
}

/// Forward resize: `x` is `[n, in_h, in_w, c]`, `y` (overwritten) is `[n, out_h, out_w, c]`.
pub fn resize_forward<T: Real>(
    plan: &ResizePlan,
    n: usize,
    c: usize,
    x: &[T],
    y: &mut [T],
) -> Result<(), KernelError> {
    check_len(KERNEL, "x", x.len(), element_count(n, plan.in_hw, c)?)?;
    check_len(KERNEL, "y", y.len(), element_count(n, plan.out_hw, c)?)?;
    let inner = (plan.in_hw[1] != plan.out_hw[1]).then_some(&plan.cols);
    let outer = (plan.in_hw[0] != plan.out_hw[0]).then_some(&plan.rows);
    apply_separable(inner, outer, n, c, plan.in_hw, x, y);
    Ok(())
}

/// Backward resize: `dy` is `[n, out_h, out_w, c]`; `dx` (overwritten) is `[n, in_h, in_w, c]`,
/// the transpose of the forward map applied to `dy`.
pub fn resize_backward<T: Real>(
    plan: &ResizePlan,
    n: usize,
    c: usize,
    dy: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    check_len(KERNEL, "dy", dy.len(), element_count(n, plan.out_hw, c)?)?;
    check_len(KERNEL, "dx", dx.len(), element_count(n, plan.in_hw, c)?)?;
    // (Rows · Cols)ᵀ = Colsᵀ · Rowsᵀ, and the two axes commute, so the transposed tables are
    // applied in the same width-then-height order as the forward pass.
    let inner = (plan.in_hw[1] != plan.out_hw[1]).then_some(&plan.cols_t);
    let outer = (plan.in_hw[0] != plan.out_hw[0]).then_some(&plan.rows_t);
    apply_separable(inner, outer, n, c, plan.out_hw, dy, dx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_filter_interpolates_and_sums_to_one() {
        assert_eq!(cubic_filter(0.0), 1.0);
        assert_eq!(cubic_filter(1.0), 0.0);
        assert_eq!(cubic_filter(-2.0), 0.0);
        // Keys' kernel is a partition of unity for any shift.
        for shift in [0.0, 0.1, 0.37, 0.5, 0.93] {
            let s: f64 = (-3..=3).map(|k| cubic_filter(k as f64 + shift)).sum();
            assert!((s - 1.0).abs() < 1e-14, "shift {shift}: {s}");
        }
    }

    #[test]
    fn transposed_table_holds_the_same_taps() {
        let map = AxisWeights::bicubic_aa(13, 5);
        let t = map.transposed();
        assert_eq!(t.transposed(), map);
        assert_eq!(t.weights.len(), map.weights.len());
    }
}
