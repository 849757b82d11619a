//! The ring all-reduce in device memory: each rank's tensors are packed into one device buffer
//! per ring chunk, chunks travel between devices by peer-to-peer copies, and the receiving
//! device adds them with a kernel. No host round trip and no NCCL.
//!
//! Within a ring step every rank receives one chunk and sends another (`ring.rs`), so the
//! copies and additions of a step, queued on the receivers' streams, never touch a chunk that
//! another operation of the same step writes. Between steps every device is synchronised, so
//! a chunk is complete on its sender before it is read.
//!
//! Ranks may share a device (`cuda:0,cuda:0`): the peer copy is then a device-to-device copy.

use super::ring::{chunk, pieces, ring_mean, RingTransport};
use crate::cuda::ops::elementwise;
use crate::cuda::{CudaDevice, CudaResult, DeviceBuffer};
use crate::error::{Result, RuntimeError};
use crate::tensor_cuda::cuda_error;
use crate::Tensor;
use std::ops::Range;
use std::sync::Arc;

const OP: &str = "all-reduce";

/// One rank: its device, its packed tensors as one buffer per chunk, and where received
/// chunks land before they are added.
struct Member {
    dev: Arc<CudaDevice>,
    chunks: Vec<DeviceBuffer>,
    staging: DeviceBuffer,
}

struct PeerRing {
    members: Vec<Member>,
    len: usize,
}

impl PeerRing {
    /// Every distinct device once.
    fn devices(&self) -> Vec<&Arc<CudaDevice>> {
        let mut seen: Vec<&Arc<CudaDevice>> = Vec::new();
        for m in &self.members {
            if !seen
                .iter()
                .any(|d| d.info().ordinal == m.dev.info().ordinal)
            {
                seen.push(&m.dev);
            }
        }
        seen
    }

    fn synchronize(&self) -> CudaResult<()> {
        self.devices().into_iter().try_for_each(|d| d.synchronize())
    }
}

impl RingTransport for PeerRing {
    fn ranks(&self) -> usize {
        self.members.len()
    }
    fn len(&self) -> usize {
        self.len
    }
    fn reduce(&mut self, sender: usize, receiver: usize, c: usize, r: Range<usize>) -> Result<()> {
        if r.is_empty() {
            return Ok(());
        }
        let (from, to) = (&self.members[sender], &self.members[receiver]);
        to.dev
            .copy_from_peer(&from.dev, &from.chunks[c], 0, &to.staging, 0, r.len() * 4)
            .and_then(|()| elementwise::axpy(&to.dev, &to.staging, &to.chunks[c], r.len(), 1.0))
            .map_err(|e| cuda_error(OP, e))
    }
    fn scale(&mut self, rank: usize, c: usize, r: Range<usize>, factor: f32) -> Result<()> {
        if r.is_empty() {
            return Ok(());
        }
        let m = &self.members[rank];
        elementwise::scale(&m.dev, &m.chunks[c], &m.chunks[c], r.len(), factor)
            .map_err(|e| cuda_error(OP, e))
    }
    fn copy(&mut self, sender: usize, receiver: usize, c: usize, r: Range<usize>) -> Result<()> {
        let (from, to) = (&self.members[sender], &self.members[receiver]);
        to.dev
            .copy_from_peer(&from.dev, &from.chunks[c], 0, &to.chunks[c], 0, r.len() * 4)
            .map_err(|e| cuda_error(OP, e))
    }
    fn step_done(&mut self) -> Result<()> {
        self.synchronize().map_err(|e| cuda_error(OP, e))
    }
}

/// The ring over device chunks (every tensor of every rank on CUDA, checked by the caller;
/// shapes checked alike).
pub(super) fn all_reduce_mean(ranks: &mut [Vec<Tensor>]) -> Result<()> {
    let n = ranks.len();
    let len: usize = ranks[0].iter().map(Tensor::numel).sum();
    let members = ranks
        .iter()
        .enumerate()
        .map(|(rank, tensors)| pack(rank, tensors, len, n))
        .collect::<Result<Vec<_>>>()?;
    let mut ring = PeerRing { members, len };
    for a in 0..n {
        for b in 0..n {
            let (x, y) = (&ring.members[a].dev, &ring.members[b].dev);
            x.enable_peer_access(y).map_err(|e| cuda_error(OP, e))?;
        }
    }
    // Packing ran on each rank's stream; the first step reads across devices.
    let result = ring
        .synchronize()
        .map_err(|e| cuda_error(OP, e))
        .and_then(|()| ring_mean(&mut ring))
        .and_then(|()| {
            ranks
                .iter_mut()
                .zip(&ring.members)
                .try_for_each(|(tensors, m)| unpack(m, tensors, len, n))
        });
    if result.is_err() {
        // Copies may still be in flight between devices: let them finish before the chunk
        // buffers go back to their pools (the error at hand is the one worth reporting).
        let _ = ring.synchronize();
    }
    result
}

/// The device all of a rank's tensors are on.
fn rank_device(rank: usize, tensors: &[Tensor]) -> Result<Arc<CudaDevice>> {
    let mut dev: Option<&Arc<CudaDevice>> = None;
    for t in tensors {
        let (d, _) = t.cuda(OP)?;
        match dev {
            Some(first) if first.info().ordinal != d.info().ordinal => {
                return Err(RuntimeError::Other(format!(
                    "all-reduce: rank {rank} holds tensors on cuda:{} and cuda:{}",
                    first.info().ordinal,
                    d.info().ordinal
                )))
            }
            _ => dev = Some(d),
        }
    }
    dev.cloned()
        .ok_or_else(|| RuntimeError::Other(format!("all-reduce: rank {rank} holds no tensors")))
}

/// Copy a rank's tensors, one after another, into per-chunk buffers on its device.
fn pack(rank: usize, tensors: &[Tensor], len: usize, n: usize) -> Result<Member> {
    let dev = rank_device(rank, tensors)?;
    let alloc = |elements: usize| dev.alloc_f32(elements.max(1));
    let chunks = (0..n)
        .map(|c| alloc(chunk(len, n, c).len()))
        .collect::<CudaResult<Vec<_>>>()
        .map_err(|e| cuda_error(OP, e))?;
    let staging = alloc(chunk(len, n, 0).len()).map_err(|e| cuda_error(OP, e))?;
    let mut offset = 0;
    for t in tensors {
        let (_, buf) = t.cuda(OP)?;
        for (c, piece) in pieces(offset, t.numel(), len, n) {
            let bytes = piece.len() * 4;
            let (from, to) = (
                (piece.start - offset) * 4,
                (piece.start - chunk(len, n, c).start) * 4,
            );
            dev.copy_2d(buf, from, bytes, &chunks[c], to, bytes, bytes, 1)
                .map_err(|e| cuda_error(OP, e))?;
        }
        offset += t.numel();
    }
    Ok(Member {
        dev,
        chunks,
        staging,
    })
}

/// Replace a rank's tensors by fresh buffers filled from its (reduced) chunks.
fn unpack(m: &Member, tensors: &mut [Tensor], len: usize, n: usize) -> Result<()> {
    let mut offset = 0;
    for t in tensors.iter_mut() {
        let numel = t.numel();
        let out = m.dev.alloc_f32(numel).map_err(|e| cuda_error(OP, e))?;
        for (c, piece) in pieces(offset, numel, len, n) {
            let bytes = piece.len() * 4;
            let (from, to) = (
                (piece.start - chunk(len, n, c).start) * 4,
                (piece.start - offset) * 4,
            );
            m.dev
                .copy_2d(&m.chunks[c], from, bytes, &out, to, bytes, bytes, 1)
                .map_err(|e| cuda_error(OP, e))?;
        }
        *t = Tensor::from_cuda_buffer(&m.dev, t.shape(), out)?;
        offset += numel;
    }
    Ok(())
}
