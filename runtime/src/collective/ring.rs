//! The ring all-reduce schedule, apart from where the buffers live.
//!
//! Each of `n` ranks holds a buffer of the same length, cut into `n` chunks. In the
//! reduce-scatter phase, for `n − 1` steps, every rank passes one chunk to its right-hand
//! neighbour, which adds it to its own; afterwards rank `r` holds the complete sum of chunk
//! `r + 1`. In the all-gather phase the complete chunks travel round the ring the same way,
//! overwriting. Every rank sends and receives `2 (n − 1) / n` of the buffer, whatever `n` is,
//! which is why the ring is the algorithm of choice between devices linked pairwise.
//!
//! The sums are formed in a fixed order per chunk, and the all-gather copies the finished
//! chunks, so every rank ends with the **same bits**, which keeps data-parallel replicas
//! identical after each optimizer step. A [`RingTransport`] moves and adds the chunks: host
//! vectors here ([`ring_all_reduce_mean`]), device buffers with peer copies in `peer.rs`.
//! Both add `receiver + sender` and then scale by `1 / n` in f32, so they give the same bits.

use crate::error::{Result, RuntimeError};
use std::ops::Range;

/// The elements of chunk `c` of `n` over a buffer of `len` (the first `len % n` chunks are one
/// longer, so chunks differ by at most one element and none is empty while `len ≥ n`).
pub(crate) fn chunk(len: usize, n: usize, c: usize) -> Range<usize> {
    let (base, extra) = (len / n, len % n);
    let start = c * base + c.min(extra);
    start..start + base + usize::from(c < extra)
}

/// Where elements `start..start + count` of a buffer of `len` cut into `n` chunks lie: each
/// overlapped chunk with the overlap (in buffer elements). Packing tensors one after another
/// into per-chunk buffers copies these pieces. (Only the CUDA transport packs this way; the
/// tests check the layout without it.)
#[cfg(any(test, feature = "cuda"))]
pub(crate) fn pieces(
    start: usize,
    count: usize,
    len: usize,
    n: usize,
) -> impl Iterator<Item = (usize, Range<usize>)> {
    let end = start + count;
    (0..n).filter_map(move |c| {
        let r = chunk(len, n, c);
        let overlap = r.start.max(start)..r.end.min(end);
        (!overlap.is_empty()).then_some((c, overlap))
    })
}

/// What the ring needs of the ranks' buffers. Within one step every rank receives one chunk
/// and sends another, so the calls of a step touch disjoint chunks of each rank and may run
/// concurrently; [`RingTransport::step_done`] must not return before they have all completed.
pub(crate) trait RingTransport {
    fn ranks(&self) -> usize;
    /// Elements in each rank's buffer.
    fn len(&self) -> usize;
    /// Chunk `c` (elements `range`) of `receiver` += the same chunk of `sender`.
    fn reduce(
        &mut self,
        sender: usize,
        receiver: usize,
        c: usize,
        range: Range<usize>,
    ) -> Result<()>;
    /// Chunk `c` of `rank` *= `factor`.
    fn scale(&mut self, rank: usize, c: usize, range: Range<usize>, factor: f32) -> Result<()>;
    /// Chunk `c` of `receiver` = the same chunk of `sender`.
    fn copy(&mut self, sender: usize, receiver: usize, c: usize, range: Range<usize>)
        -> Result<()>;
    /// Wait for everything queued in this step.
    fn step_done(&mut self) -> Result<()>;
}

/// Replace every rank's buffer by the element-wise mean over the ranks.
pub(crate) fn ring_mean(t: &mut impl RingTransport) -> Result<()> {
    let (n, len) = (t.ranks(), t.len());
    if n <= 1 {
        return Ok(());
    }
    let at = |c: usize| (c, chunk(len, n, c));
    for step in 0..n - 1 {
        for sender in 0..n {
            let (c, range) = at((sender + n - step) % n);
            t.reduce(sender, (sender + 1) % n, c, range)?;
        }
        t.step_done()?;
    }
    // Rank r now owns the full sum of chunk r + 1: scale it once, before it is copied round.
    let inv = 1.0 / n as f32;
    for rank in 0..n {
        let (c, range) = at((rank + 1) % n);
        t.scale(rank, c, range, inv)?;
    }
    t.step_done()?;
    for step in 0..n - 1 {
        for sender in 0..n {
            let (c, range) = at((sender + 1 + n - step) % n);
            t.copy(sender, (sender + 1) % n, c, range)?;
        }
        t.step_done()?;
    }
    Ok(())
}

/// Host buffers, with a staging vector standing for the receiver's landing buffer.
struct HostRing<'a> {
    buffers: &'a mut [Vec<f32>],
    staged: Vec<f32>,
}

impl RingTransport for HostRing<'_> {
    fn ranks(&self) -> usize {
        self.buffers.len()
    }
    fn len(&self) -> usize {
        self.buffers.first().map_or(0, Vec::len)
    }
    fn reduce(&mut self, sender: usize, receiver: usize, _: usize, r: Range<usize>) -> Result<()> {
        self.staged.clear();
        self.staged
            .extend_from_slice(&self.buffers[sender][r.clone()]);
        for (acc, v) in self.buffers[receiver][r].iter_mut().zip(&self.staged) {
            *acc += v;
        }
        Ok(())
    }
    fn scale(&mut self, rank: usize, _: usize, r: Range<usize>, factor: f32) -> Result<()> {
        self.buffers[rank][r].iter_mut().for_each(|v| *v *= factor);
        Ok(())
    }
    fn copy(&mut self, sender: usize, receiver: usize, _: usize, r: Range<usize>) -> Result<()> {
        self.staged.clear();
        self.staged
            .extend_from_slice(&self.buffers[sender][r.clone()]);
        self.buffers[receiver][r].copy_from_slice(&self.staged);
        Ok(())
    }
    fn step_done(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Replace every buffer by the element-wise mean of all of them, by ring all-reduce.
/// All buffers must have the same length; one buffer (or none) is left as it is.
pub fn ring_all_reduce_mean(buffers: &mut [Vec<f32>]) -> Result<()> {
    let len = buffers.first().map_or(0, Vec::len);
    if let Some((rank, b)) = buffers.iter().enumerate().find(|(_, b)| b.len() != len) {
        return Err(RuntimeError::Other(format!(
            "all-reduce: rank {rank} holds {} values, rank 0 holds {len}: the replicas' \
             gradients differ in shape",
            b.len()
        )));
    }
    let staged = Vec::with_capacity(len / buffers.len().max(1) + 1);
    ring_mean(&mut HostRing { buffers, staged })
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
    fn pieces_place_every_element_once() {
        for (len, n) in [(10, 3), (3, 3), (2, 5), (1000, 8), (7, 2)] {
            let sizes = [0, 1, 3, len / 2];
            let mut start = 0;
            let mut seen = vec![0u8; len];
            for size in sizes.iter().copied().cycle() {
                let count = size.min(len - start);
                for (c, piece) in pieces(start, count, len, n) {
                    let r = chunk(len, n, c);
                    assert!(r.start <= piece.start && piece.end <= r.end, "{len}/{n}");
                    assert!(start <= piece.start && piece.end <= start + count);
                    piece.for_each(|i| seen[i] += 1);
                }
                start += count;
                if start == len {
                    break;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{len}/{n}: {seen:?}");
        }
    }

    /// What the device transport relies on: within one step, no rank's chunk is both written
    /// and read, nor written twice, so the step's copies may run concurrently.
    #[test]
    fn a_step_never_reads_what_it_writes() {
        #[derive(Default)]
        struct Recorder {
            n: usize,
            reads: Vec<(usize, usize)>,
            writes: Vec<(usize, usize)>,
            steps: usize,
        }
        impl Recorder {
            fn check_and_clear(&mut self) {
                for w in &self.writes {
                    assert_eq!(self.writes.iter().filter(|x| *x == w).count(), 1, "{w:?}");
                    assert!(!self.reads.contains(w), "step {}: {w:?}", self.steps);
                }
                self.reads.clear();
                self.writes.clear();
                self.steps += 1;
            }
        }
        impl RingTransport for Recorder {
            fn ranks(&self) -> usize {
                self.n
            }
            fn len(&self) -> usize {
                100
            }
            fn reduce(&mut self, s: usize, r: usize, c: usize, _: Range<usize>) -> Result<()> {
                self.reads.push((s, c));
                self.writes.push((r, c));
                Ok(())
            }
            fn scale(&mut self, rank: usize, c: usize, _: Range<usize>, _: f32) -> Result<()> {
                self.writes.push((rank, c));
                Ok(())
            }
            fn copy(&mut self, s: usize, r: usize, c: usize, _: Range<usize>) -> Result<()> {
                self.reads.push((s, c));
                self.writes.push((r, c));
                Ok(())
            }
            fn step_done(&mut self) -> Result<()> {
                self.check_and_clear();
                Ok(())
            }
        }
        for n in 2..=8 {
            let mut r = Recorder {
                n,
                ..Recorder::default()
            };
            ring_mean(&mut r).unwrap();
            assert_eq!(r.steps, 2 * (n - 1) + 1, "n {n}");
            assert!(
                r.writes.is_empty(),
                "n {n}: work queued after the last step"
            );
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
