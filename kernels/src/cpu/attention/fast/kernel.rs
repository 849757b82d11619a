//! The 16×6 f32 AVX2+FMA microkernel and the tile product built on it. Operands come in
//! packed panels (see `pack`), so a tile product is nothing but microkernel calls: no
//! per-call packing, no allocation, no dispatch.

use std::arch::x86_64::*;

/// Rows of an A panel (two AVX registers).
pub(super) const MR: usize = 16;
/// Columns of a B panel (broadcast one at a time).
pub(super) const NR: usize = 6;
/// Inner-dimension block of a tile product.
const KC: usize = 256;

/// A-side operand: panel `p` starts at `p·stride`; element `(kk, ii)` of a panel (inner index
/// `kk`, row `ii < MR`) is at `kk·MR + ii`.
#[derive(Clone, Copy)]
pub(super) struct APanels<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

/// B-side operand: group `g` starts at `g·stride`; element `(kk, jj)` (column `jj < NR`) is
/// at `kk·NR + jj`.
#[derive(Clone, Copy)]
pub(super) struct BPanels<'a> {
    pub data: &'a [f32],
    pub stride: usize,
}

impl<'a> BPanels<'a> {
    /// Groups starting `offset` elements into `data` (a sub-range of the inner index).
    pub fn at(data: &'a [f32], offset: usize, stride: usize) -> Self {
        BPanels {
            data: &data[offset..],
            stride,
        }
    }
}

/// Result: panel `p` starts at `p·stride`; element `(ii, j)` of a panel is at `j·MR + ii`,
/// so block `(p, g)` is the `MR·NR` floats at `p·stride + g·MR·NR`.
pub(super) struct CPanels<'a> {
    pub data: &'a mut [f32],
    pub stride: usize,
}

/// `C[p][g] (+)= A[p]·B[g]` for `p < panels`, `g < groups`, over an inner dimension `k`.
///
/// # Safety
/// The CPU must support AVX2 and FMA. (Extents are checked against the slices here.)
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile_product(
    panels: usize,
    groups: usize,
    k: usize,
    a: APanels,
    b: BPanels,
    c: CPanels,
    accumulate: bool,
) {
    if panels == 0 || groups == 0 {
        return;
    }
    // A panel, B group and C block extents; a failure is a tiling bug, never user input.
    assert!(
        (panels - 1) * a.stride + k * MR <= a.data.len()
            && (groups - 1) * b.stride + k * NR <= b.data.len()
            && (panels - 1) * c.stride + groups * MR * NR <= c.data.len(),
        "attention: internal panel layout error"
    );
    // Blocked over the inner dimension so that the A panels of one block (panels × KC × 16)
    // stay in L2; within a block the B group (KC × 6) stays in L1 while the A panels stream.
    for kb in (0..k).step_by(KC) {
        let kc = KC.min(k - kb);
        let accumulate = accumulate || kb > 0;
        for g in 0..groups {
            let bp = b.data.as_ptr().add(g * b.stride + kb * NR);
            for p in 0..panels {
                let ap = a.data.as_ptr().add(p * a.stride + kb * MR);
                let cp = c.data.as_mut_ptr().add(p * c.stride + g * MR * NR);
                microkernel(kc, ap, bp, cp, accumulate);
            }
        }
    }
}

/// One 16×6 block: `c (+)= a·b` with `a` `k×16`, `b` `k×6` (packed), `c` column-major 16×6.
#[target_feature(enable = "avx2,fma")]
unsafe fn microkernel(
    k: usize,
    mut a: *const f32,
    mut b: *const f32,
    c: *mut f32,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; NR];
    for _ in 0..k {
        let a0 = _mm256_loadu_ps(a);
        let a1 = _mm256_loadu_ps(a.add(8));
        for (j, col) in acc.iter_mut().enumerate() {
            let bj = _mm256_broadcast_ss(&*b.add(j));
            col[0] = _mm256_fmadd_ps(a0, bj, col[0]);
            col[1] = _mm256_fmadd_ps(a1, bj, col[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    for (j, col) in acc.iter().enumerate() {
        for (h, &v) in col.iter().enumerate() {
            let p = c.add(j * MR + h * 8);
            let v = if accumulate {
                _mm256_add_ps(v, _mm256_loadu_ps(p))
            } else {
                v
            };
            _mm256_storeu_ps(p, v);
        }
    }
}
