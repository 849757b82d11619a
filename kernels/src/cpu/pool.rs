//! 2×2 max pooling with stride 2 over H and W of channels-last `[N, D, H, W, C]` (2D data has
//! D = 1; a depth axis is pooled slice by slice), forward and backward.
//!
//! Odd H or W drop their last row / column (PyTorch's floor mode). Forward saves, per output,
//! which of the four window cells won (`2·dh + dw`), so the backward is a scatter. As in
//! PyTorch, NaN wins (propagates) and among equal values the first cell wins.

use crate::error::check_len;
use crate::{KernelError, Real, Spatial};
use rayon::prelude::*;

/// Geometry of a 2×2/2 max pool: input `[n, spatial, channels]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxPoolDims {
    pub n: usize,
    /// Input `[d, h, w]`.
    pub spatial: Spatial,
    pub channels: usize,
}

impl MaxPoolDims {
    /// Output `[d, h / 2, w / 2]`.
    pub fn out_spatial(&self) -> Spatial {
        [self.spatial[0], self.spatial[1] / 2, self.spatial[2] / 2]
    }

    /// Elements of the input.
    pub fn in_len(&self) -> usize {
        self.n * crate::volume(self.spatial) * self.channels
    }

    /// Elements of the output (and of the saved argmax).
    pub fn out_len(&self) -> usize {
        self.n * crate::volume(self.out_spatial()) * self.channels
    }
}

/// Max pool forward: `y` and, per output element, the winning cell of its window in `argmax`.
pub fn max_pool2x2_forward<T: Real>(
    d: &MaxPoolDims,
    x: &[T],
    y: &mut [T],
    argmax: &mut [u8],
) -> Result<(), KernelError> {
    let kernel = "max_pool2x2_forward";
    check_len(kernel, "x", x.len(), d.in_len())?;
    check_len(kernel, "y", y.len(), d.out_len())?;
    check_len(kernel, "argmax", argmax.len(), d.out_len())?;
    if y.is_empty() {
        return Ok(());
    }
    let [_, ih, iw] = d.spatial;
    let [_, oh, ow] = d.out_spatial();
    let c = d.channels;
    // One task per output row: reads input rows 2·oh and 2·oh + 1 of the same slice.
    y.par_chunks_mut(ow * c)
        .zip(argmax.par_chunks_mut(ow * c))
        .with_min_len((4096 / (ow * c)).max(1))
        .enumerate()
        .for_each(|(row, (yr, ar))| {
            let (slice, h) = (row / oh, row % oh);
            let top = (slice * ih + 2 * h) * iw * c;
            let bottom = top + iw * c;
            for w in 0..ow {
                let cells = [
                    top + 2 * w * c,
                    top + (2 * w + 1) * c,
                    bottom + 2 * w * c,
                    bottom + (2 * w + 1) * c,
                ];
                for ch in 0..c {
                    let mut best = x[cells[0] + ch];
                    let mut arg = 0u8;
                    for (k, &cell) in cells.iter().enumerate().skip(1) {
                        let v = x[cell + ch];
                        if !best.is_nan() && (v > best || v.is_nan()) {
                            best = v;
                            arg = k as u8;
                        }
                    }
                    yr[w * c + ch] = best;
                    ar[w * c + ch] = arg;
                }
            }
        });
    Ok(())
}

/// Max pool backward: `dx` is zero except at each window's winner, which gets that output's
/// gradient (overwrites `dx`).
pub fn max_pool2x2_backward<T: Real>(
    d: &MaxPoolDims,
    argmax: &[u8],
    dy: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "max_pool2x2_backward";
    check_len(kernel, "dy", dy.len(), d.out_len())?;
    check_len(kernel, "argmax", argmax.len(), d.out_len())?;
    check_len(kernel, "dx", dx.len(), d.in_len())?;
    if let Some(&bad) = argmax.iter().find(|&&a| a > 3) {
        return Err(KernelError::Geometry {
            kernel,
            msg: format!("argmax entry {bad} is not a 2x2 window cell"),
        });
    }
    if dx.is_empty() {
        return Ok(());
    }
    let [_, ih, iw] = d.spatial;
    let [_, oh, ow] = d.out_spatial();
    let c = d.channels;
    let plane = ih * iw * c;
    // One task per (slice, pair of input rows); a trailing odd row gets no gradient.
    dx.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(slice, dplane)| {
            dplane
                .par_chunks_mut(2 * iw * c)
                .with_min_len((4096 / (2 * iw * c)).max(1))
                .enumerate()
                .for_each(|(h, pair)| {
                    pair.fill(T::zero());
                    if h >= oh {
                        return;
                    }
                    let out_row = (slice * oh + h) * ow * c;
                    for w in 0..ow {
                        for ch in 0..c {
                            let o = out_row + w * c + ch;
                            let k = argmax[o] as usize;
                            let (dh, dw) = (k / 2, k % 2);
                            pair[dh * iw * c + (2 * w + dw) * c + ch] = dy[o];
                        }
                    }
                });
        });
    Ok(())
}
