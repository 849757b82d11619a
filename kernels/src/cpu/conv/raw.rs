//! The unsafe edge of the convolution: calls into the `gemm` crate on strided views, and a
//! shared output pointer for parallel writers of provably disjoint ranges. Callers check every
//! offset against slice lengths before they get here (see `VirtualGemm::check`).

use gemm::Parallelism;
use std::any::TypeId;

/// `gemm::gemm` dispatches on the element type at run time and panics on types it lacks;
/// the convolution refuses such types up front instead.
pub(super) fn gemm_supports<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>()
}

/// A strided matrix view: element `(i, j)` is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(super) struct View<P> {
    pub ptr: P,
    pub rs: usize,
    pub cs: usize,
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`.
///
/// # Safety
/// Every element `(i, j)` with `i < rows, j < cols` of each view must be inside one live
/// allocation; `dst` must not overlap `lhs` or `rhs`, and nobody else may access `dst`'s
/// elements during the call. `T` must satisfy [`gemm_supports`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm<T: num_traits::Float + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: View<*mut T>,
    accumulate: bool,
    lhs: View<*const T>,
    rhs: View<*const T>,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.ptr.add(i * dst.rs + j * dst.cs) = T::zero();
                }
            }
        }
        return;
    }
    // gemm computes dst := alpha·dst + beta·lhs·rhs, reading dst only when asked to.
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        dst.cs as isize,
        dst.rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        T::one(),
        T::one(),
        false,
        false,
        false,
        parallelism,
    );
}

/// A mutable buffer shared by parallel tasks that each write their own, disjoint ranges.
pub(super) struct SharedOut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the pointer is only turned into slices through `range`, whose contract requires
// concurrent callers to use disjoint ranges; T itself is Send.
unsafe impl<T: Send> Send for SharedOut<T> {}
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub fn new(buf: &mut [T]) -> Self {
        SharedOut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// The elements `start..start + len`.
    ///
    /// # Safety
    /// No other live slice from this `SharedOut` may overlap the range, and the buffer it was
    /// made from must outlive the returned slice.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, start: usize, len: usize) -> &mut [T] {
        // Out of range here is a bug in the layout arithmetic, never a consequence of user
        // input (which is validated before any task starts); refuse to write out of bounds.
        assert!(
            start <= self.len && len <= self.len - start,
            "conv: internal layout error ({start}+{len} > {})",
            self.len
        );
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}
