//! Ring all-reduce for data-parallel training, without NCCL.
//!
//! Each of `n` ranks holds a buffer of the same length, cut into `n` chunks. In the
//! reduce-scatter phase, for `n − 1` steps, every rank passes one chunk to its right-hand
//! neighbour, which adds it to its own; afterwards rank `r` holds the complete sum of chunk
//! `r + 1`. In the all-gather phase the complete chunks travel round the ring the same way,
//! overwriting. Every rank sends and receives `2 (n − 1) / n` of the buffer, whatever `n` is,
//! which is why the ring is the algorithm of choice between devices linked pairwise.
//!
//! The chunk transfers here are host copies: the replicas' gradients are packed into host
//! buffers first (see `model::train::parallel`). The sums are formed in a fixed order per
//! chunk, and the all-gather copies the finished chunks, so every rank ends with the **same
//! bits**, which keeps data-parallel replicas identical after each optimizer step.

use crate::error::{Result, RuntimeError};
use std::ops::Range;

/// The elements of chunk `c` of `n` over a buffer of `len` (the first `len % n` chunks are one
/// longer, so chunks differ by at most one element and none is empty while `len ≥ n`).
fn chunk(len: usize, n: usize, c: usize) -> Range<usize> {
    let (base, extra) = (len / n, len % n);
    let start = c * base + c.min(extra);
    start..start + base + usize::from(c < extra)
}

/// Replace every buffer by the element-wise mean of all of them, by ring all-reduce.
/// All buffers must have the same length; one buffer (or none) is left as it is.
pub fn ring_all_reduce_mean(buffers: &mut [Vec<f32>]) -> Result<()> {
    let n = buffers.len();
    if n <= 1 {
        return Ok(());
    }
    let len = buffers[0].len();
    if let Some((rank, b)) = buffers.iter().enumerate().find(|(_, b)| b.len() != len) {
        return Err(RuntimeError::Other(format!(
            "all-reduce: rank {rank} holds {} values, rank 0 holds {len}: the replicas' \
             gradients differ in shape",
            b.len()
        )));
    }
    // The chunk in flight, as it would sit in the receiver's staging buffer.
    let mut staged = Vec::with_capacity(len / n + 1);
    for step in 0..n - 1 {
        for sender in 0..n {
            let c = chunk(len, n, (sender + n - step) % n);
            let receiver = (sender + 1) % n;
            staged.clear();
            staged.extend_from_slice(&buffers[sender][c.clone()]);
            for (acc, v) in buffers[receiver][c].iter_mut().zip(&staged) {
                *acc += v;
            }
        }
    }
    // Rank r now owns the full sum of chunk r + 1: scale it once, before it is copied round.
    let inv = 1.0 / n as f32;
    for (rank, buffer) in buffers.iter_mut().enumerate() {
        buffer[chunk(len, n, (rank + 1) % n)]
            .iter_mut()
            .for_each(|v| *v *= inv);
    }
    for step in 0..n - 1 {
        for sender in 0..n {
            let c = chunk(len, n, (sender + 1 + n - step) % n);
            let receiver = (sender + 1) % n;
            staged.clear();
            staged.extend_from_slice(&buffers[sender][c.clone()]);
            buffers[receiver][c].copy_from_slice(&staged);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values that differ per rank and element, with mixed magnitudes so that
    /// summation order shows in the low bits.
    fn buffers(n: usize, len: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|r| {
                (0..len)
                    .map(|i| {
                        ((i * 7 + r * 13) as f32 * 0.37).sin() * 10f32.powi((i % 5) as i32 - 2)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn chunks_tile_the_buffer() {
        for (len, n) in [(10, 3), (3, 3), (2, 5), (0, 4), (1000, 8)] {
            let mut next = 0;
            for c in 0..n {
                let r = chunk(len, n, c);
                assert_eq!(r.start, next, "{len}/{n} chunk {c}");
                assert!(r.len() == len / n || r.len() == len / n + 1);
                next = r.end;
            }
            assert_eq!(next, len, "{len}/{n}");
        }
    }

    /// Every rank ends with the same bits, and those are the mean (to rounding) for ring
    /// sizes 2–7 and buffers shorter than, equal to and longer than the ring.
    #[test]
    fn every_rank_gets_the_same_mean() {
        for n in 2..=7 {
            for len in [1, n - 1, n, n + 1, 97, 1000] {
                let original = buffers(n, len);
                let mut reduced = original.clone();
                ring_all_reduce_mean(&mut reduced).unwrap();
                for i in 0..len {
                    let mean = original.iter().map(|b| b[i] as f64).sum::<f64>() / n as f64;
                    let scale = original.iter().map(|b| b[i].abs() as f64).sum::<f64>();
                    let err = (reduced[0][i] as f64 - mean).abs();
                    assert!(
                        err <= 1e-6 * scale.max(1e-30),
                        "n {n} len {len} [{i}]: {err}"
                    );
                    for (rank, b) in reduced.iter().enumerate() {
                        assert_eq!(
                            b[i].to_bits(),
                            reduced[0][i].to_bits(),
                            "n {n} len {len} rank {rank} [{i}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_rank_is_unchanged_and_mismatched_lengths_are_refused() {
        let mut one = buffers(1, 5);
        let before = one.clone();
        ring_all_reduce_mean(&mut one).unwrap();
        assert_eq!(one, before);
        let mut bad = vec![vec![1.0; 4], vec![1.0; 5]];
        let err = ring_all_reduce_mean(&mut bad).unwrap_err().to_string();
        assert!(
            err.contains("rank 1 holds 5 values, rank 0 holds 4"),
            "{err}"
        );
    }
}
