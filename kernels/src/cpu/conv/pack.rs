//! Zero-padded, phase-split copies of a channels-last tensor: the source layout the implicit
//! GEMM reads. One pass over the data, no im2col blow-up.
//!
//! For a stride `s` along z (and y), the padded source is split into `s` phases by coordinate
//! residue, so that a strided convolution reads each phase with unit stride in z and y; along
//! x the stride stays a plain row stride of the GEMM operand. With stride 1 this is just the
//! zero-padded tensor.

use crate::{Real, Spatial};
use rayon::prelude::*;

/// How to build the packed source from a `[batch, d, h, w, c]` tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PackSpec {
    /// Zero padding before the data in `[z, y, x]`.
    pub lo: Spatial,
    /// Phases used along z and y (at most the stride).
    pub phases: [usize; 2],
    /// Stride along z and y: phase `a` holds padded coordinates `step·q + a`.
    pub step: [usize; 2],
    /// Extent of one phase `[z, y, x]` (x in pixels, unsplit).
    pub ext: Spatial,
}

impl PackSpec {
    /// Pixels of one phase of one batch item.
    pub fn phase_pixels(&self) -> usize {
        self.ext[0] * self.ext[1] * self.ext[2]
    }

    /// Pixels of one batch item (all phases).
    pub fn item_pixels(&self) -> usize {
        self.phases[0] * self.phases[1] * self.phase_pixels()
    }

    /// True when packing would reproduce the input unchanged (stride 1, no padding, same
    /// extents), so the input can be read in place.
    pub fn is_identity(&self, input: Spatial) -> bool {
        self.lo == [0; 3] && self.phases == [1, 1] && self.ext == input
    }
}

/// Write the packed copy of `x` (`[batch, input, c]`) into `out`
/// (`[batch, phase_z, phase_y, ext_z, ext_y, ext_x, c]`), zeros wherever the padded coordinate
/// falls outside the data. Every element of `out` is written once.
pub(super) fn pack<T: Real>(
    x: &[T],
    batch: usize,
    input: Spatial,
    c: usize,
    spec: &PackSpec,
    out: &mut [T],
) {
    let row = spec.ext[2] * c;
    let [d, h, w] = input;
    let rows = batch * spec.phases[0] * spec.phases[1] * spec.ext[0] * spec.ext[1];
    debug_assert_eq!(out.len(), rows * row);
    out.par_chunks_mut(row)
        .with_min_len(8)
        .enumerate()
        .for_each(|(i, dst)| {
            let yq = i % spec.ext[1];
            let rest = i / spec.ext[1];
            let zq = rest % spec.ext[0];
            let rest = rest / spec.ext[0];
            let b = rest % spec.phases[1];
            let rest = rest / spec.phases[1];
            let a = rest % spec.phases[0];
            let n = rest / spec.phases[0];
            let z = (spec.step[0] * zq + a)
                .checked_sub(spec.lo[0])
                .filter(|&z| z < d);
            let y = (spec.step[1] * yq + b)
                .checked_sub(spec.lo[1])
                .filter(|&y| y < h);
            let src = match (z, y) {
                (Some(z), Some(y)) => {
                    let from = ((n * d + z) * h + y) * w * c;
                    Some(&x[from..from + w * c])
                }
                _ => None,
            };
            fill_row(dst, src, spec.lo[2], c);
        });
}

/// Write one padded row: `lo` zero pixels, then the `src` row (or zeros where there is no
/// source row), then zeros to the end, all cut to `dst`'s length.
pub(super) fn fill_row<T: Real>(dst: &mut [T], src: Option<&[T]>, lo: usize, c: usize) {
    let x0 = (lo * c).min(dst.len());
    match src {
        Some(src) => {
            let x1 = (x0 + src.len()).min(dst.len());
            dst[..x0].fill(T::zero());
            dst[x0..x1].copy_from_slice(&src[..x1 - x0]);
            dst[x1..].fill(T::zero());
        }
        None => dst.fill(T::zero()),
    }
}
