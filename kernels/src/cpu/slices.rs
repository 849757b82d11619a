//! The slices of a channels-last volume `[N, D, H, W, C]` across one axis as a batch of 2D
//! images, and its adjoint. The 3D losses run their 2D networks (LPIPS, the PatchGAN) on these
//! batches:
//!
//! | axis | batch | image `b = n·S + i`, pixel `(r, c)` is voxel |
//! |---|---|---|
//! | 0 (depth)  | `[N·D, H, W, C]` | `(n, i, r, c)` — the volume's own memory order |
//! | 1 (height) | `[N·H, D, W, C]` | `(n, r, i, c)` |
//! | 2 (width)  | `[N·W, D, H, C]` | `(n, r, c, i)` |
//!
//! Each voxel lies in exactly one slice per axis, so the gather is a permutation and its
//! adjoint a scatter without collisions: the backward adds each slice pixel's gradient into its
//! voxel (`+=`, so the three axes of one volume accumulate into one gradient).

use crate::error::check_len;
use crate::{volume, KernelError, Real, Spatial};
use rayon::prelude::*;

/// A volume `[n, spatial, channels]` to be cut into slices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SliceDims {
    pub n: usize,
    /// `[d, h, w]`.
    pub spatial: Spatial,
    pub channels: usize,
}

impl SliceDims {
    /// The image shape `[rows, cols]` of the slices across `axis` (0 = depth).
    pub fn slice_hw(&self, axis: usize) -> [usize; 2] {
        let [d, h, w] = self.spatial;
        match axis {
            0 => [h, w],
            1 => [d, w],
            _ => [d, h],
        }
    }

    /// Images across `axis`, over the batch: `n · spatial[axis]`.
    pub fn count(&self, axis: usize) -> usize {
        self.n * self.spatial[axis.min(2)]
    }

    /// Elements of the volume, which are also the elements of each axis's slice batch.
    pub fn len(&self) -> usize {
        self.n * volume(self.spatial) * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element offset, in the axis-`axis` slice batch, of voxel `(n, d, h, w)` (channel 0).
    #[inline]
    pub fn slice_offset(&self, axis: usize, n: usize, d: usize, h: usize, w: usize) -> usize {
        let [dd, hh, ww] = self.spatial;
        let pixel = match axis {
            0 => ((n * dd + d) * hh + h) * ww + w,
            1 => ((n * hh + h) * dd + d) * ww + w,
            _ => ((n * ww + w) * dd + d) * hh + h,
        };
        pixel * self.channels
    }

    /// `axis` must name one of the three spatial axes.
    pub fn check_axis(&self, kernel: &'static str, axis: usize) -> Result<(), KernelError> {
        if axis < 3 {
            Ok(())
        } else {
            Err(KernelError::Geometry {
                kernel,
                msg: format!("slice axis {axis}: expected 0 (depth), 1 (height) or 2 (width)"),
            })
        }
    }
}

/// `dst` (the `count(axis)` images of `axis`, `len()` elements) from the volume `x`.
pub fn gather_slices<T: Real>(
    d: &SliceDims,
    axis: usize,
    x: &[T],
    dst: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "gather_slices";
    d.check_axis(kernel, axis)?;
    check_len(kernel, "x", x.len(), d.len())?;
    check_len(kernel, "dst", dst.len(), d.len())?;
    if d.is_empty() {
        return Ok(());
    }
    if axis == 0 {
        // Depth slices are the volume's own memory order.
        dst.copy_from_slice(x);
        return Ok(());
    }
    let [vd, vh, vw] = d.spatial;
    let c = d.channels;
    let [rows, cols] = d.slice_hw(axis);
    let s = d.spatial[axis];
    // One task per destination image (sample n, slice index i): disjoint writes.
    dst.par_chunks_mut(rows * cols * c)
        .enumerate()
        .for_each(|(img, out)| {
            let (n, i) = (img / s, img % s);
            for r in 0..rows {
                for col in 0..cols {
                    let (z, y, xx) = if axis == 1 { (r, i, col) } else { (r, col, i) };
                    let src = (((n * vd + z) * vh + y) * vw + xx) * c;
                    let at = (r * cols + col) * c;
                    out[at..at + c].copy_from_slice(&x[src..src + c]);
                }
            }
        });
    Ok(())
}

/// The adjoint of [`gather_slices`]: `dx[voxel] += g[its pixel in the axis-`axis` batch]`.
/// Accumulates, so the axes of one volume add into one gradient.
pub fn scatter_add_slices<T: Real>(
    d: &SliceDims,
    axis: usize,
    g: &[T],
    dx: &mut [T],
) -> Result<(), KernelError> {
    let kernel = "scatter_add_slices";
    d.check_axis(kernel, axis)?;
    check_len(kernel, "g", g.len(), d.len())?;
    check_len(kernel, "dx", dx.len(), d.len())?;
    if d.is_empty() {
        return Ok(());
    }
    let [vd, vh, vw] = d.spatial;
    let c = d.channels;
    // One task per (n, d) plane of the volume: disjoint writes, each voxel read from its one
    // pixel of the slice batch.
    dx.par_chunks_mut(vh * vw * c)
        .enumerate()
        .for_each(|(plane, o)| {
            let (n, z) = (plane / vd, plane % vd);
            for y in 0..vh {
                for xx in 0..vw {
                    let at = (y * vw + xx) * c;
                    let src = d.slice_offset(axis, n, z, y, xx);
                    for (acc, &v) in o[at..at + c].iter_mut().zip(&g[src..src + c]) {
                        *acc += v;
                    }
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, distinct values (no two voxels alike, so a wrong index cannot hide).
    fn ramp(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                i as f64 + (s % 1000) as f64 / 1000.0
            })
            .collect()
    }

    /// The batch built index by index from the table in the module docs.
    fn reference(d: &SliceDims, axis: usize, x: &[f64]) -> Vec<f64> {
        let [vd, vh, vw] = d.spatial;
        let c = d.channels;
        let [rows, cols] = d.slice_hw(axis);
        let s = d.spatial[axis];
        let mut out = vec![f64::NAN; d.len()];
        for n in 0..d.n {
            for i in 0..s {
                for r in 0..rows {
                    for col in 0..cols {
                        let (z, y, xx) = match axis {
                            0 => (i, r, col),
                            1 => (r, i, col),
                            _ => (r, col, i),
                        };
                        for ch in 0..c {
                            let img = n * s + i;
                            out[((img * rows + r) * cols + col) * c + ch] =
                                x[(((n * vd + z) * vh + y) * vw + xx) * c + ch];
                        }
                    }
                }
            }
        }
        out
    }

    const SHAPES: &[(usize, Spatial, usize)] = &[
        (1, [2, 3, 4], 1),
        (2, [3, 5, 2], 3),
        (2, [4, 4, 4], 1),
        (3, [1, 6, 5], 3),
        (1, [7, 1, 3], 2),
    ];

    #[test]
    fn gather_matches_the_index_by_index_construction() {
        for (k, &(n, spatial, channels)) in SHAPES.iter().enumerate() {
            let d = SliceDims {
                n,
                spatial,
                channels,
            };
            let x = ramp(d.len(), k as u64);
            for axis in 0..3 {
                let mut got = vec![0.0; d.len()];
                gather_slices(&d, axis, &x, &mut got).unwrap();
                assert_eq!(got, reference(&d, axis, &x), "{d:?} axis {axis}");
            }
        }
    }

    #[test]
    fn slice_offset_locates_each_voxel_in_the_batch() {
        let d = SliceDims {
            n: 2,
            spatial: [3, 4, 5],
            channels: 2,
        };
        let x = ramp(d.len(), 9);
        let [vd, vh, vw] = d.spatial;
        for axis in 0..3 {
            let batch = reference(&d, axis, &x);
            for n in 0..d.n {
                for z in 0..vd {
                    for y in 0..vh {
                        for xx in 0..vw {
                            let v = (((n * vd + z) * vh + y) * vw + xx) * 2;
                            let s = d.slice_offset(axis, n, z, y, xx);
                            assert_eq!(batch[s..s + 2], x[v..v + 2], "axis {axis}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scatter_is_the_adjoint_and_accumulates() {
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        for (k, &(n, spatial, channels)) in SHAPES.iter().enumerate() {
            let d = SliceDims {
                n,
                spatial,
                channels,
            };
            let x = ramp(d.len(), 100 + k as u64);
            for axis in 0..3 {
                let g = ramp(d.len(), 200 + (3 * k + axis) as u64);
                let mut y = vec![0.0; d.len()];
                gather_slices(&d, axis, &x, &mut y).unwrap();
                let start = ramp(d.len(), 300 + k as u64);
                let mut dx = start.clone();
                scatter_add_slices(&d, axis, &g, &mut dx).unwrap();
                // ⟨gather(x), g⟩ = ⟨x, scatter(g)⟩, the scatter added on top of `start`.
                let added: Vec<f64> = dx.iter().zip(&start).map(|(a, b)| a - b).collect();
                let (lhs, rhs) = (dot(&y, &g), dot(&x, &added));
                assert!(
                    (lhs - rhs).abs() <= 1e-9 * lhs.abs().max(1.0),
                    "{d:?} axis {axis}: {lhs} vs {rhs}"
                );
            }
            // Each voxel sums exactly one pixel per axis: a gradient of ones gives threes.
            let ones = vec![1.0; d.len()];
            let mut threes = vec![0.0; d.len()];
            for axis in 0..3 {
                scatter_add_slices(&d, axis, &ones, &mut threes).unwrap();
            }
            assert!(threes.iter().all(|&v| v == 3.0), "{d:?}");
        }
    }

    #[test]
    fn bad_axes_and_lengths_are_errors() {
        let d = SliceDims {
            n: 1,
            spatial: [2, 2, 2],
            channels: 1,
        };
        let (x, mut y) = (vec![0.0f32; 8], vec![0.0f32; 8]);
        assert!(gather_slices(&d, 3, &x, &mut y).is_err());
        assert!(scatter_add_slices(&d, 3, &x, &mut y).is_err());
        assert!(gather_slices(&d, 1, &x[..7], &mut y).is_err());
        assert!(scatter_add_slices(&d, 2, &x, &mut y[..7]).is_err());
    }
}
