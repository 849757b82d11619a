//! Convolution bias gradient: `db[c] += Σ_positions dy[.., c]`. (The weight gradient is
//! `VirtualGemm::accumulate_weight_grad` on the forward's packed input, or the Winograd one.)

use rayon::prelude::*;

use crate::Real;

/// Positions per task of the bias reduction.
const BIAS_ROWS_PER_TASK: usize = 2048;

/// `db[c] += Σ_positions dy[.., c]`, summed in f64 per task so long reductions stay exact.
/// The per-task sums are added in task order, so the result never depends on scheduling.
pub(super) fn accumulate_bias_grad<T: Real>(dy: &[T], channels: usize, db: &mut [T]) {
    let per_task: Vec<Vec<f64>> = dy
        .par_chunks(channels * BIAS_ROWS_PER_TASK)
        .map(|rows| {
            let mut acc = vec![0f64; channels];
            for pix in rows.chunks_exact(channels) {
                for (a, &v) in acc.iter_mut().zip(pix) {
                    *a += v.f64();
                }
            }
            acc
        })
        .collect();
    let mut sums = vec![0f64; channels];
    for task in &per_task {
        for (s, v) in sums.iter_mut().zip(task) {
            *s += v;
        }
    }
    for (d, s) in db.iter_mut().zip(sums) {
        *d += T::c(s);
    }
}
