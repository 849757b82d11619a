//! Strided views of a flat buffer, and the two copies between a view and a dense tensor:
//! `gather` (view → dense) and `scatter` (dense → view, assigned or added).
//!
//! Element `i` of a view (row-major over `shape`, multi-index `(i_0, …, i_{r-1})`) lives at
//! `offset + Σ_d i_d · strides[d]` of the buffer. Permutations (ViT head split and merge, patch
//! rows), crops, row picks (the class token) and broadcasts (stride 0) are all views, so one
//! pair of kernels serves every rearrangement a model needs on any device, instead of one
//! host loop per layout.
//!
//! A gather may read an element several times (broadcast). A scatter must not write one twice:
//! [`StridedView::is_disjoint`] is checked, so the adjoint of a gather through a disjoint view
//! is a scatter through the same view, with no collisions (and no atomics on a GPU).

use crate::error::check_len;
use crate::{KernelError, Real};
use rayon::prelude::*;

/// Largest rank of a view (the CUDA kernels take a fixed-size descriptor).
pub const MAX_VIEW_RANK: usize = 6;

/// Elements copied per parallel task.
const TASK_ELEMENTS: usize = 1 << 14;

/// A strided view: `shape` and `strides` (in elements) of equal length, from `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedView {
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

impl StridedView {
    /// A view; the rank must be at most [`MAX_VIEW_RANK`] and equal for shape and strides.
    pub fn new(offset: usize, shape: &[usize], strides: &[usize]) -> Result<Self, KernelError> {
        if shape.len() != strides.len() || shape.len() > MAX_VIEW_RANK {
            return Err(KernelError::Geometry {
                kernel: "strided view",
                msg: format!(
                    "shape {shape:?} and strides {strides:?} must have one rank of at most \
                     {MAX_VIEW_RANK}"
                ),
            });
        }
        Ok(StridedView {
            offset,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        })
    }

    /// The dense row-major view of `shape` from `offset`.
    pub fn dense(offset: usize, shape: &[usize]) -> Result<Self, KernelError> {
        let mut strides = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        StridedView::new(offset, shape, &strides)
    }

    /// Elements of the view.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the largest buffer index the view touches (0 when empty): the buffer length
    /// the view needs.
    pub fn span(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let last: usize = self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(&e, &s)| (e - 1) * s)
            .sum();
        self.offset + last + 1
    }

    /// Whether no two elements of the view share a buffer index (sufficient test: with the
    /// dimensions ordered by stride, each stride exceeds the reach of all smaller ones).
    pub fn is_disjoint(&self) -> bool {
        let mut dims: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&e, _)| e > 1)
            .map(|(&e, &s)| (s, e))
            .collect();
        dims.sort_unstable();
        let mut reach = 0;
        for (stride, extent) in dims {
            if stride <= reach {
                return false;
            }
            reach += (extent - 1) * stride;
        }
        true
    }

    /// The same view with extent-1 dimensions dropped and adjacent dimensions merged where
    /// they are contiguous in the buffer (a crop of whole rows becomes one long inner run);
    /// never empty of dimensions (rank ≥ 1).
    pub fn simplified(&self) -> StridedView {
        let mut shape: Vec<usize> = Vec::with_capacity(self.shape.len());
        let mut strides: Vec<usize> = Vec::with_capacity(self.shape.len());
        for (&e, &s) in self.shape.iter().zip(&self.strides) {
            if e == 1 {
                continue;
            }
            match (shape.last_mut(), strides.last_mut()) {
                (Some(pe), Some(ps)) if *ps == s * e => {
                    *pe *= e;
                    *ps = s;
                }
                _ => {
                    shape.push(e);
                    strides.push(s);
                }
            }
        }
        if shape.is_empty() || self.is_empty() {
            // A single element (or none): one dimension keeps the kernels' loops uniform.
            shape = vec![self.len()];
            strides = vec![1];
        }
        StridedView {
            offset: self.offset,
            shape,
            strides,
        }
    }

    /// Buffer index of the first element of inner row `row` (all dimensions but the last).
    #[inline]
    fn row_start(&self, mut row: usize) -> usize {
        let mut at = self.offset;
        for d in (0..self.shape.len().saturating_sub(1)).rev() {
            let e = self.shape[d];
            at += (row % e) * self.strides[d];
            row /= e;
        }
        at
    }

    /// Inner run length and stride (the last dimension; 1 and 1 for rank 0).
    fn inner(&self) -> (usize, usize) {
        match (self.shape.last(), self.strides.last()) {
            (Some(&e), Some(&s)) => (e, s),
            _ => (1, 1),
        }
    }

    /// The buffer must hold the view.
    pub fn check_fits(
        &self,
        kernel: &'static str,
        what: &'static str,
        len: usize,
    ) -> Result<(), KernelError> {
        if self.span() <= len {
            Ok(())
        } else {
            Err(KernelError::Geometry {
                kernel,
                msg: format!(
                    "the view {:?} (strides {:?}, offset {}) reaches element {} of {what}, which \
                     has {len}",
                    self.shape,
                    self.strides,
                    self.offset,
                    self.span() - 1
                ),
            })
        }
    }
}

/// `dst[i] = src[view(i)]` for every element `i` of the view (`dst` dense, `view.len()` long).
pub fn gather<T: Real>(view: &StridedView, src: &[T], dst: &mut [T]) -> Result<(), KernelError> {
    const KERNEL: &str = "strided gather";
    view.check_fits(KERNEL, "src", src.len())?;
    check_len(KERNEL, "dst", dst.len(), view.len())?;
    if view.is_empty() {
        return Ok(());
    }
    let v = view.simplified();
    let (inner, inner_stride) = v.inner();
    let rows_per_task = (TASK_ELEMENTS / inner).max(1);
    dst.par_chunks_mut(inner * rows_per_task)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (k, out) in chunk.chunks_mut(inner).enumerate() {
                let at = v.row_start(task * rows_per_task + k);
                if inner_stride == 1 {
                    out.copy_from_slice(&src[at..at + inner]);
                } else {
                    for (j, o) in out.iter_mut().enumerate() {
                        *o = src[at + j * inner_stride];
                    }
                }
            }
        });
    Ok(())
}

/// `dst[view(i)] = src[i]` (or `+=` with `accumulate`) for every element `i` of the view
/// (`src` dense); the rest of `dst` is left as it is. The view must be disjoint.
pub fn scatter<T: Real>(
    view: &StridedView,
    src: &[T],
    dst: &mut [T],
    accumulate: bool,
) -> Result<(), KernelError> {
    const KERNEL: &str = "strided scatter";
    view.check_fits(KERNEL, "dst", dst.len())?;
    check_len(KERNEL, "src", src.len(), view.len())?;
    if !view.is_disjoint() {
        return Err(KernelError::Geometry {
            kernel: KERNEL,
            msg: format!(
                "the view {:?} (strides {:?}) writes some elements twice",
                view.shape, view.strides
            ),
        });
    }
    if view.is_empty() {
        return Ok(());
    }
    let v = view.simplified();
    let (inner, inner_stride) = v.inner();
    // Serial: the rows land in interleaved parts of `dst`, which safe Rust cannot hand to
    // several threads; the rearrangements scattered are small next to the GEMMs around them.
    for (row, part) in src.chunks(inner).enumerate() {
        let at = v.row_start(row);
        for (j, &x) in part.iter().enumerate() {
            let o = &mut dst[at + j * inner_stride];
            if accumulate {
                *o += x;
            } else {
                *o = x;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index of element `i` by the definition (no simplification).
    fn naive_index(v: &StridedView, mut i: usize) -> usize {
        let mut at = v.offset;
        for d in (0..v.shape.len()).rev() {
            at += (i % v.shape[d]) * v.strides[d];
            i /= v.shape[d];
        }
        at
    }

    fn views() -> Vec<StridedView> {
        let v = |o, s: &[usize], t: &[usize]| StridedView::new(o, s, t).unwrap();
        vec![
            // ViT head split of [2, 5, 3, 4, 6] tokens (part 1): [2, 4, 5, 6].
            v(24, &[2, 4, 5, 6], &[5 * 72, 6, 72, 1]),
            // Patch rows of a [2, 8, 12, 3] image with 4x4 patches: [2, 2, 3, 3, 4, 4].
            v(0, &[2, 2, 3, 3, 4, 4], &[288, 144, 12, 1, 36, 3]),
            // A crop [2, 3, 4, 3] of [2, 5, 7, 3] from (1, 2).
            v((7 + 2) * 3, &[2, 3, 4, 3], &[105, 21, 3, 1]),
            // Class rows of [3, 5, 8] tokens, and a single element.
            v(0, &[3, 8], &[40, 1]),
            v(7, &[1, 1], &[9, 1]),
            // An empty view.
            v(0, &[0, 3], &[3, 1]),
        ]
    }

    #[test]
    fn gather_and_scatter_follow_the_definition() {
        for v in views() {
            let n = v.span().max(1) + 3;
            let src: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 7.0).collect();
            let mut got = vec![0.0; v.len()];
            gather(&v, &src, &mut got).unwrap();
            for (i, g) in got.iter().enumerate() {
                assert_eq!(*g, src[naive_index(&v, i)], "{v:?} element {i}");
            }
            assert!(v.is_disjoint(), "{v:?}");
            let dense: Vec<f32> = (0..v.len()).map(|i| 100.0 + i as f32).collect();
            let mut dst = vec![-1.0f32; n];
            scatter(&v, &dense, &mut dst, false).unwrap();
            let mut want = vec![-1.0f32; n];
            for (i, &x) in dense.iter().enumerate() {
                want[naive_index(&v, i)] = x;
            }
            assert_eq!(dst, want, "{v:?} scatter");
            scatter(&v, &dense, &mut dst, true).unwrap();
            for (i, &x) in dense.iter().enumerate() {
                want[naive_index(&v, i)] += x;
            }
            assert_eq!(dst, want, "{v:?} scatter-add");
        }
    }

    #[test]
    fn broadcasts_gather_but_never_scatter() {
        let v = StridedView::new(1, &[3, 2], &[0, 1]).unwrap();
        let mut out = vec![0.0f32; 6];
        gather(&v, &[9.0, 1.0, 2.0], &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
        assert!(!v.is_disjoint());
        let mut dst = vec![0.0f32; 3];
        assert!(scatter(&v, &out, &mut dst, true).is_err());
        // Overlapping rows (stride 2 under a run of 3) are caught too.
        assert!(!StridedView::new(0, &[4, 3], &[2, 1]).unwrap().is_disjoint());
    }

    #[test]
    fn out_of_range_views_and_bad_ranks_are_errors() {
        let v = StridedView::new(5, &[2, 3], &[3, 1]).unwrap();
        assert_eq!(v.span(), 11);
        let mut out = vec![0.0f32; 6];
        assert!(gather(&v, &[0.0; 10], &mut out).is_err());
        assert!(gather(&v, &[0.0; 11], &mut out).is_ok());
        assert!(gather(&v, &[0.0; 11], &mut out[..5]).is_err());
        assert!(scatter(&v, &out, &mut [0.0; 10], false).is_err());
        assert!(StridedView::new(0, &[1; 7], &[1; 7]).is_err());
        assert!(StridedView::new(0, &[1, 2], &[1]).is_err());
    }

    #[test]
    fn simplification_merges_contiguous_dimensions() {
        let crop = StridedView::new(0, &[2, 3, 4, 3], &[105, 21, 3, 1]).unwrap();
        let s = crop.simplified();
        assert_eq!((s.shape, s.strides), (vec![2, 3, 12], vec![105, 21, 1]));
        let dense = StridedView::dense(4, &[2, 1, 3, 5]).unwrap().simplified();
        assert_eq!((dense.shape, dense.strides), (vec![30], vec![1]));
        let one = StridedView::new(7, &[1, 1], &[9, 1]).unwrap().simplified();
        assert_eq!((one.shape, one.strides, one.offset), (vec![1], vec![1], 7));
    }
}
