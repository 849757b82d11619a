//! Convolution backward with respect to the input (a transposed convolution).
//!
//! Input positions are split by residue modulo the stride, per dimension. For residue `r`,
//! `dx[s·q + r - lo] = Σ_j dy[q - j] · w[s·j + r]ᵀ`: a stride-1 correlation of `dy` (zero
//! padded) with the flipped, transposed sub-kernel of the taps `≡ r (mod s)`. Each residue
//! class is therefore one virtual-grid implicit GEMM on the padded `dy`, with the `kx` taps
//! folded into the contraction; the flipped sub-kernels are a small rearranged copy of `w`.
//! With stride 1 there is a single class and the full kernel. Classes write disjoint
//! positions of `dx`, so every element of `dx` is written exactly once (zero where no tap
//! reaches it).

use super::implicit_gemm::{Term, VirtualGemm};
use super::pack::PackSpec;
use super::raw::SharedOut;
use super::workspace::ThreadBuffers;
use super::ConvGeometry;
use crate::{Real, Spatial};
use rayon::prelude::*;

/// Taps of a kernel of size `k` with index `≡ r (mod s)`.
fn taps_in_class(k: usize, s: usize, r: usize) -> usize {
    if r < k {
        (k - r).div_ceil(s)
    } else {
        0
    }
}

/// One residue class of input positions and its plan.
pub(super) struct DataClass {
    pub plan: VirtualGemm,
    /// Residue per dimension.
    pub residue: Spatial,
    /// First `q` per dimension: input coordinate `s·(q_min + grid) + residue - lo`.
    pub q_min: Spatial,
    /// Taps per dimension of this class's sub-kernel.
    pub taps: Spatial,
    /// Offset of the class's flipped sub-kernel in the rearranged weight.
    pub weight: usize,
}

/// Every residue class with at least one input position, how to pad `dy`, and the length of
/// the rearranged weight.
pub(super) fn backward_data_plan(g: &ConvGeometry) -> (Vec<DataClass>, PackSpec) {
    let out = g.out_spatial();
    let mut lo = [0; 3];
    let mut ext = [0; 3];
    for i in 0..3 {
        let (k, s) = (g.kernel[i], g.stride[i]);
        // Pad dy by (taps of the largest class - 1) before; after, enough that the last input
        // position of class 0 still reads inside: q_max + lo.
        lo[i] = k.div_ceil(s) - 1;
        let q_max0 = (g.in_spatial[i] - 1 + g.pad_lo[i]) / s;
        ext[i] = (out[i] + lo[i]).max(q_max0 + lo[i] + 1);
    }
    let spec = PackSpec {
        lo,
        phases: [1, 1],
        step: [1, 1],
        ext,
    };
    let tap_block = g.cin * g.cout;
    let mut classes = Vec::new();
    let mut weight = 0;
    for rz in 0..g.stride[0] {
        for ry in 0..g.stride[1] {
            for rx in 0..g.stride[2] {
                let residue = [rz, ry, rx];
                let mut q_min = [0; 3];
                let mut grid = [0; 3];
                let mut taps = [0; 3];
                for i in 0..3 {
                    let (s, r, l) = (g.stride[i], residue[i], g.pad_lo[i]);
                    taps[i] = taps_in_class(g.kernel[i], s, r);
                    // Input coordinates s·q + r - l in [0, n): q in [ceil((l-r)/s), (n-1+l-r)/s].
                    q_min[i] = l.saturating_sub(r).div_ceil(s);
                    let last = g.in_spatial[i] - 1 + l;
                    grid[i] = if last >= r {
                        ((last - r) / s + 1).saturating_sub(q_min[i])
                    } else {
                        0
                    };
                }
                let mut terms = Vec::with_capacity(taps[0] * taps[1]);
                // Grid position p reads padded dy at q_min + p - (taps - 1) + lo + j'.
                let base: Vec<usize> = (0..3).map(|i| q_min[i] + lo[i] + 1 - taps[i]).collect();
                if !taps.contains(&0) {
                    for jz in 0..taps[0] {
                        for jy in 0..taps[1] {
                            terms.push(Term {
                                src_pixel: ((base[0] + jz) * ext[1] + base[1] + jy) * ext[2]
                                    + base[2],
                                width: taps[2],
                                weight: weight + (jz * taps[1] + jy) * taps[2] * tap_block,
                            });
                        }
                    }
                }
                if !grid.contains(&0) {
                    classes.push(DataClass {
                        plan: VirtualGemm {
                            batch: g.batch,
                            grid,
                            vy: ext[1],
                            vx: ext[2],
                            sx: 1,
                            src_batch: spec.item_pixels(),
                            c: g.cout,
                            n: g.cin,
                            terms,
                        },
                        residue,
                        q_min,
                        taps,
                        weight,
                    });
                }
                weight += taps[0] * taps[1] * taps[2] * tap_block;
            }
        }
    }
    (classes, spec)
}

/// Write the flipped, transposed sub-kernels of every class into `wf` (length of `w`):
/// class block `[jz, jy, jx, cout, cin]` holds `w[s·(t-1-j) + r, .., ci, co]`.
pub(super) fn flip_weight<T: Real>(g: &ConvGeometry, classes: &[DataClass], w: &[T], wf: &mut [T]) {
    let [_, kh, kw] = g.kernel;
    let (cin, cout) = (g.cin, g.cout);
    // Source tap of every destination tap block, in destination order.
    let mut sources = vec![usize::MAX; g.kernel.iter().product()];
    for cl in classes {
        let t = cl.taps;
        for jz in 0..t[0] {
            for jy in 0..t[1] {
                for jx in 0..t[2] {
                    let j = [jz, jy, jx];
                    let k: Vec<usize> = (0..3)
                        .map(|i| g.stride[i] * (t[i] - 1 - j[i]) + cl.residue[i])
                        .collect();
                    let dst = cl.weight / (cin * cout) + (jz * t[1] + jy) * t[2] + jx;
                    sources[dst] = (k[0] * kh + k[1]) * kw + k[2];
                }
            }
        }
    }
    wf.par_chunks_mut(cin * cout)
        .zip(sources.par_iter())
        .for_each(|(dst, &src_tap)| {
            if src_tap == usize::MAX {
                // A tap of a class with no input positions: never read.
                return;
            }
            let src = &w[src_tap * cin * cout..(src_tap + 1) * cin * cout];
            transpose(src, cin, cout, dst);
        });
}

/// `dst (cols × rows) = srcᵀ` for a row-major `rows × cols` `src`, in cache-sized tiles.
fn transpose<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// Run every class on the padded `dy` and write `dx`.
pub(super) fn backward_data_on_source<T: Real>(
    g: &ConvGeometry,
    classes: &[DataClass],
    src: &[T],
    wf: &[T],
    dx: &mut [T],
    threads: &ThreadBuffers<T>,
) {
    let [d, h, w] = g.in_spatial;
    let cin = g.cin;
    let dx_out = SharedOut::new(dx);
    for cl in classes {
        let plan = &cl.plan;
        let [_, gy, gx] = plan.grid;
        let s = g.stride;
        let coord = |i: usize, p: usize| s[i] * (cl.q_min[i] + p) + cl.residue[i] - g.pad_lo[i];
        plan.run(src, wf, threads, |ch, buf| {
            let (v0, _) = plan.span(ch);
            for r in ch.row0..ch.row0 + ch.rows {
                let (iz, iy) = (coord(0, r / gy), coord(1, r % gy));
                let ix0 = coord(2, 0);
                let row = ((ch.batch * d + iz) * h + iy) * w;
                let span = (s[2] * (gx - 1) + 1) * cin;
                // SAFETY: within one class, distinct grid rows are distinct rows of dx, and
                // classes run one after another; the span covers this row's class positions.
                let dst = unsafe { dx_out.range((row + ix0) * cin, span) };
                let from = (plan.vrow(r) - v0) * cin;
                let src_row = &buf[from..from + gx * cin];
                if s[2] == 1 {
                    dst.copy_from_slice(src_row);
                } else {
                    for (p, pix) in src_row.chunks_exact(cin).enumerate() {
                        dst[p * s[2] * cin..p * s[2] * cin + cin].copy_from_slice(pix);
                    }
                }
            }
        });
    }
}
