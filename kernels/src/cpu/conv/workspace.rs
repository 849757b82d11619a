//! Buffers that survive between calls, so that a training step reusing a [`ConvScratch`]
//! does not allocate (and page-fault in) megabytes of task buffers on every convolution.
//!
//! [`ConvScratch`]: super::ConvScratch

use crate::Real;
use rayon::prelude::*;
use std::sync::Mutex;

/// The temporary buffers of one parallel task.
#[derive(Debug)]
pub(super) struct TaskBuffers<T> {
    pub a: Vec<T>,
    pub b: Vec<T>,
    pub c: Vec<T>,
}

// Manual `Default` impls: the derive would require `T: Default`.
impl<T> Default for TaskBuffers<T> {
    fn default() -> Self {
        TaskBuffers {
            a: Vec::new(),
            b: Vec::new(),
            c: Vec::new(),
        }
    }
}

/// One [`TaskBuffers`] per thread of the rayon pool.
#[derive(Debug)]
pub(super) struct ThreadBuffers<T> {
    slots: Vec<Mutex<TaskBuffers<T>>>,
}

impl<T> Default for ThreadBuffers<T> {
    fn default() -> Self {
        ThreadBuffers { slots: Vec::new() }
    }
}

impl<T> ThreadBuffers<T> {
    /// Make sure every thread of the current pool has its buffers.
    pub fn prepare(&mut self) {
        let n = rayon::current_num_threads();
        if self.slots.len() < n {
            self.slots.resize_with(n, Default::default);
        }
    }

    /// Run `f` with the calling pool thread's buffers; with fresh ones when the thread has no
    /// slot (another pool, or not a pool thread) or its slot is in use.
    pub fn with<R>(&self, f: impl FnOnce(&mut TaskBuffers<T>) -> R) -> R {
        let slot = rayon::current_thread_index()
            .and_then(|i| self.slots.get(i))
            .and_then(|m| m.try_lock().ok());
        match slot {
            Some(mut buffers) => f(&mut buffers),
            None => f(&mut TaskBuffers::default()),
        }
    }
}

/// Partial sums of a parallel reduction (weight gradients). The work is cut into a fixed
/// number of contiguous groups, each summed by one task into its own slot, and the slots are
/// added in index order: for a given thread count the result is bit-for-bit the same on every
/// run (training is reproducible and activation recomputation replays exactly), which
/// per-thread accumulation under work stealing would not give. Slots are zeroed on first use
/// in a call, so unused ones cost nothing.
#[derive(Debug)]
pub(super) struct Partials<T> {
    sums: Vec<Mutex<PartialSum<T>>>,
    len: usize,
}

#[derive(Debug)]
struct PartialSum<T> {
    used: bool,
    sum: Vec<T>,
}

impl<T> Default for Partials<T> {
    fn default() -> Self {
        Partials {
            sums: Vec::new(),
            len: 0,
        }
    }
}

/// The contiguous range of `items` work items that group `group` of `groups` sums.
pub(super) fn group_range(items: usize, groups: usize, group: usize) -> std::ops::Range<usize> {
    items * group / groups..items * (group + 1) / groups
}

/// How many groups to cut `items` work items into: one per pool thread, never more than items.
pub(super) fn group_count(items: usize) -> usize {
    rayon::current_num_threads().clamp(1, items.max(1))
}

impl<T: Real> Partials<T> {
    /// Start a reduction into `slots` sums of `len` elements.
    pub fn reset(&mut self, len: usize, slots: usize) {
        if self.sums.len() < slots {
            self.sums.resize_with(slots, || {
                Mutex::new(PartialSum {
                    used: false,
                    sum: Vec::new(),
                })
            });
        }
        for m in &mut self.sums {
            m.get_mut().unwrap_or_else(|e| e.into_inner()).used = false;
        }
        self.len = len;
    }

    /// Run `f` on slot `slot`'s sum. Each slot belongs to one task, so the lock never waits.
    pub fn with<R>(&self, slot: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
        match self.sums.get(slot) {
            Some(m) => {
                let mut p = m.lock().unwrap_or_else(|e| e.into_inner());
                if !p.used {
                    p.sum.clear();
                    p.sum.resize(self.len, T::zero());
                    p.used = true;
                }
                f(&mut p.sum)
            }
            // Out of range is a caller bug; a lone sum would be dropped, so fail loudly in
            // debug builds and keep the (then incomplete) reduction otherwise defined.
            None => {
                debug_assert!(false, "partial slot {slot} out of range");
                f(&mut vec![T::zero(); self.len])
            }
        }
    }

    /// Add the total of the slots used since [`reset`](Self::reset) to `dst`, in slot order.
    pub fn add_total_to(&mut self, dst: &mut [T]) {
        const SPAN: usize = 1 << 14;
        let used: Vec<&[T]> = self
            .sums
            .iter_mut()
            .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()))
            .filter(|p| p.used)
            .map(|p| &p.sum[..])
            .collect();
        dst.par_chunks_mut(SPAN).enumerate().for_each(|(i, out)| {
            let range = i * SPAN..i * SPAN + out.len();
            for sum in &used {
                for (o, &v) in out.iter_mut().zip(&sum[range.clone()]) {
                    *o += v;
                }
            }
        });
    }
}

/// Everything a convolution call reuses between calls.
#[derive(Debug)]
pub(super) struct Workspace<T> {
    pub threads: ThreadBuffers<T>,
    pub partials: Partials<T>,
    /// The reduced partials, where a result needs a further pass (Winograd weight gradient).
    pub total: Vec<T>,
}

impl<T> Default for Workspace<T> {
    fn default() -> Self {
        Workspace {
            threads: ThreadBuffers::default(),
            partials: Partials::default(),
            total: Vec::new(),
        }
    }
}
