//! Packing row-major `[tokens, dim]` operands into the panel layouts of the microkernel, and
//! unpacking result panels. Regions past the real rows or columns are zero-filled, so padded
//! lanes compute zeros (callers still exclude them wherever they could matter).

use super::kernel::{MR, NR};

/// A panels of rows `r0..r0 + rows` of a row-major `[*, width]` matrix, inner index = column:
/// `dst[p·width·MR + kk·MR + ii] = scale·src[(r0 + p·MR + ii)·width + kk]`.
/// `dst` holds `⌈rows / MR⌉` panels.
#[inline(always)]
pub(super) fn a_from_rows(
    src: &[f32],
    width: usize,
    r0: usize,
    rows: usize,
    scale: f32,
    dst: &mut [f32],
) {
    for (p, panel) in dst.chunks_exact_mut(width * MR).enumerate() {
        let row0 = p * MR;
        let live = rows.saturating_sub(row0).min(MR);
        if live < MR {
            panel.fill(0.0);
        }
        for ii in 0..live {
            let row = &src[(r0 + row0 + ii) * width..(r0 + row0 + ii + 1) * width];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * MR + ii] = scale * v;
            }
        }
    }
}

/// B groups of 6 rows of `r0..r0 + rows`, inner index = column:
/// `dst[g·width·NR + kk·NR + jj] = src[(r0 + g·NR + jj)·width + kk]`. `dst` holds
/// `⌈rows / NR⌉` groups.
#[inline(always)]
pub(super) fn b_from_rows(src: &[f32], width: usize, r0: usize, rows: usize, dst: &mut [f32]) {
    for (g, group) in dst.chunks_exact_mut(width * NR).enumerate() {
        let row0 = g * NR;
        let live = rows.saturating_sub(row0).min(NR);
        if live < NR {
            group.fill(0.0);
        }
        for jj in 0..live {
            let row = &src[(r0 + row0 + jj) * width..(r0 + row0 + jj + 1) * width];
            for (kk, &v) in row.iter().enumerate() {
                group[kk * NR + jj] = v;
            }
        }
    }
}

/// B groups of 6 columns starting at column `c0`, inner index = row `r0..r0 + rows`:
/// `dst[g·rows·NR + kk·NR + jj] = src[(r0 + kk)·width + c0 + g·NR + jj]` (zero past `width`).
/// `dst` holds whole groups of `rows·NR`.
#[inline(always)]
pub(super) fn b_from_columns(
    src: &[f32],
    width: usize,
    c0: usize,
    r0: usize,
    rows: usize,
    dst: &mut [f32],
) {
    for (g, group) in dst.chunks_exact_mut(rows * NR).enumerate() {
        let col0 = c0 + g * NR;
        let live = (width - col0).min(NR);
        for (kk, out) in group.chunks_exact_mut(NR).enumerate() {
            let row = &src[(r0 + kk) * width + col0..(r0 + kk) * width + col0 + live];
            out[..live].copy_from_slice(row);
            out[live..].fill(0.0);
        }
    }
}

/// Round `x` up to a multiple of `m`.
pub(super) fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}
