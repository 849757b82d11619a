//! Nearest-neighbour upsampling by integer factors per axis on channels-last
//! `[N, D, H, W, C]`, forward and backward (2D: scale `[1, 2, 2]`; 3D: `[2, 2, 2]`).
//!
//! Output cell `(d, h, w)` reads input cell `(d / sd, h / sh, w / sw)` — PyTorch's `nearest`
//! mode for integer scale factors. The backward sums the `sd·sh·sw` copies of each cell.

use crate::error::check_len;
use crate::{volume, KernelError, Real, Spatial};
use rayon::prelude::*;

/// Geometry of a nearest upsample: input `[n, spatial, channels]`, integer `scale` per axis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpsampleDims {
    pub n: usize,
    /// Input `[d, h, w]`.
    pub spatial: Spatial,
    pub channels: usize,
    /// `[sd, sh, sw]`, each >= 1.
    pub scale: [usize; 3],
}

impl UpsampleDims {
    /// Output `[d·sd, h·sh, w·sw]`.
    pub fn out_spatial(&self) -> Spatial {
        let (s, k) = (self.spatial, self.scale);
        [s[0] * k[0], s[1] * k[1], s[2] * k[2]]
    }

    /// Elements of the input.
    pub fn in_len(&self) -> usize {
        self.n * volume(self.spatial) * self.channels
    }

    /// Elements of the output.
    pub fn out_len(&self) -> usize {
        self.n * volume(self.out_spatial()) * self.channels
    }

    fn validate(&self, kernel: &'static str) -> Result<(), KernelError> {
        if self.scale.contains(&0) {
            return Err(KernelError::Geometry {
                kernel,
                msg: format!("scale factors must be >= 1, got {:?}", self.scale),
            });
        }
        Ok(())
    }
}

/// `y[n, d, h, w, :] = x[n, d / sd, h / sh, w / sw, :]`.
pub fn upsample_nearest_forward<T: Real>(
    d: &UpsampleDims,
    x: &[T],
    y: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "upsample_nearest_forward";
    d.validate(kernel)?;
    check_len(kernel, "x", x.len(), d.in_len())?;
    check_len(kernel, "y", y.len(), d.out_len())?;
    if y.is_empty() {
        return Ok(());
    }
    let [id, ih, iw] = d.spatial;
    let [od, oh, ow] = d.out_spatial();
    let [sd, sh, sw] = d.scale;
    let c = d.channels;
    // One task per output row (n, od, oh): W·sw·C contiguous outputs.
    y.par_chunks_mut(ow * c)
        .with_min_len((4096 / (ow * c)).max(1))
        .enumerate()
        .for_each(|(row, out)| {
            let (n, rest) = (row / (od * oh), row % (od * oh));
            let (z, h) = (rest / oh, rest % oh);
            let src_row = ((n * id + z / sd) * ih + h / sh) * iw * c;
            let src = &x[src_row..src_row + iw * c];
            for (cell, block) in src.chunks_exact(c).zip(out.chunks_exact_mut(sw * c)) {
                for dst in block.chunks_exact_mut(c) {
                    dst.copy_from_slice(cell);
                }
            }
        });
    Ok(())
}

/// Backward: `dx[n, d, h, w, :] = Σ` of `dy` over the `sd·sh·sw` cells copied from it
/// (overwrites `dx`).
pub fn upsample_nearest_backward<T: Real>(
    d: &UpsampleDims,
    dy: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "upsample_nearest_backward";
    d.validate(kernel)?;
    check_len(kernel, "dy", dy.len(), d.out_len())?;
    check_len(kernel, "dx", dx.len(), d.in_len())?;
    if dx.is_empty() {
        return Ok(());
    }
    let [id, ih, iw] = d.spatial;
    let [_, oh, ow] = d.out_spatial();
    let [sd, sh, sw] = d.scale;
    let c = d.channels;
    // One task per input row (n, d, h): W·C contiguous gradients.
    dx.par_chunks_mut(iw * c)
        .with_min_len((4096 / (iw * c)).max(1))
        .enumerate()
        .for_each(|(row, out)| {
            let (n, rest) = (row / (id * ih), row % (id * ih));
            let (z, h) = (rest / ih, rest % ih);
            out.fill(T::zero());
            for i in 0..sd {
                for j in 0..sh {
                    let src_row = ((n * id * sd + z * sd + i) * oh + h * sh + j) * ow * c;
                    let src = &dy[src_row..src_row + ow * c];
                    for (cell, block) in out.chunks_exact_mut(c).zip(src.chunks_exact(sw * c)) {
                        for part in block.chunks_exact(c) {
                            for (o, &g) in cell.iter_mut().zip(part) {
                                *o += g;
                            }
                        }
                    }
                }
            }
        });
    Ok(())
}
