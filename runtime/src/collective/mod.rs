//! Collectives for data-parallel training without NCCL: every rank's tensors replaced by
//! their mean over the ranks.
//!
//! [`all_reduce_mean`] takes one list of tensors per rank (the same shapes in the same order)
//! and runs the ring of `ring.rs` over them, packed one after another:
//! * every tensor on CUDA: packed into per-chunk device buffers, moved by peer-to-peer copies
//!   and summed by a kernel on the receiving device (`peer.rs`); nothing goes through the
//!   host;
//! * otherwise (CPU ranks, or a mix): packed into host vectors, one thread per rank, so that
//!   device downloads and uploads overlap.
//!
//! Both give every rank the same bits, and the same bits as each other (f32 `a + b`, then
//! `× 1/n`, in the ring's fixed order).

#[cfg(feature = "cuda")]
mod peer;
mod ring;

pub use ring::ring_all_reduce_mean;

use crate::error::{Result, RuntimeError};
use crate::{Device, Tensor};

/// Replace every rank's tensors by the element-wise mean over the ranks. `ranks[r][i]` must
/// have the same shape for every `r`; each tensor stays on its device.
pub fn all_reduce_mean(ranks: &mut [Vec<Tensor>]) -> Result<()> {
    if ranks.len() < 2 {
        return Ok(());
    }
    check_alike(ranks)?;
    #[cfg(feature = "cuda")]
    if ranks
        .iter()
        .flatten()
        .all(|t| matches!(t.device(), Device::Cuda(_)))
    {
        return peer::all_reduce_mean(ranks);
    }
    host_all_reduce_mean(ranks)
}

/// The ranks hold the same number of tensors with the same shapes.
fn check_alike(ranks: &[Vec<Tensor>]) -> Result<()> {
    let first = &ranks[0];
    for (rank, tensors) in ranks.iter().enumerate().skip(1) {
        if tensors.len() != first.len() {
            return Err(RuntimeError::Other(format!(
                "all-reduce: rank {rank} holds {} tensors, rank 0 holds {}",
                tensors.len(),
                first.len()
            )));
        }
        if let Some((i, (a, b))) = tensors
            .iter()
            .zip(first)
            .enumerate()
            .find(|(_, (a, b))| a.shape() != b.shape())
        {
            return Err(RuntimeError::Other(format!(
                "all-reduce: tensor {i} of rank {rank} is {:?}, rank 0's is {:?}",
                a.shape(),
                b.shape()
            )));
        }
    }
    Ok(())
}

/// The ring over host copies; each tensor goes back to the device it came from.
fn host_all_reduce_mean(ranks: &mut [Vec<Tensor>]) -> Result<()> {
    let mut packed = per_rank(ranks.iter(), |tensors| {
        let mut values = Vec::with_capacity(tensors.iter().map(Tensor::numel).sum());
        for t in tensors {
            values.extend_from_slice(t.on_device(Device::Cpu)?.f32s("all-reduce")?);
        }
        Ok(values)
    })?;
    ring_all_reduce_mean(&mut packed)?;
    per_rank(ranks.iter_mut().zip(&packed), |(tensors, values)| {
        unpack_host(tensors, values)
    })?;
    Ok(())
}

/// Write `values` (the rank's tensors packed one after another) back into `tensors`.
fn unpack_host(tensors: &mut [Tensor], values: &[f32]) -> Result<()> {
    let mut offset = 0;
    for t in tensors.iter_mut() {
        let n = t.numel();
        let host = Tensor::from_vec(t.shape(), values[offset..offset + n].to_vec())?;
        *t = host.into_device(t.device())?;
        offset += n;
    }
    Ok(())
}

/// `work` on each rank's item, one thread each (device downloads and uploads overlap); the
/// results in rank order, or the first error, or a panic as an error naming the rank.
fn per_rank<I: Send, T: Send>(
    items: impl Iterator<Item = I>,
    work: impl Fn(I) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.map(|item| scope.spawn(move || work(item))).collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join().map_err(|_| {
                    RuntimeError::Other(format!("all-reduce: the thread of rank {rank} panicked"))
                })?
            })
            .collect()
    })
}
