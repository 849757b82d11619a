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

/// Per-thread partial sums of a parallel reduction (weight gradients): each task adds into
/// the sum of the thread running it, so work is balanced dynamically while the number of
/// accumulators stays at the thread count (plus one shared overflow sum for tasks running
/// outside the pool's slots).
#[derive(Debug)]
pub(super) struct Partials<T> {
    sums: Vec<Mutex<Vec<T>>>,
}

impl<T> Default for Partials<T> {
    fn default() -> Self {
        Partials { sums: Vec::new() }
    }
}

impl<T: Real> Partials<T> {
    /// One zeroed sum of `len` elements per pool thread, plus the overflow sum.
    pub fn reset(&mut self, len: usize) {
        let n = rayon::current_num_threads() + 1;
        if self.sums.len() < n {
            self.sums.resize_with(n, || Mutex::new(Vec::new()));
        }
        for m in &mut self.sums {
            let sum = m.get_mut().unwrap_or_else(|e| e.into_inner());
            sum.clear();
            sum.resize(len, T::zero());
        }
    }

    /// Run `f` on the calling thread's sum (or the shared overflow sum).
    pub fn with<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> R {
        let own = rayon::current_thread_index()
            .filter(|&i| i + 1 < self.sums.len())
            .and_then(|i| self.sums[i].try_lock().ok());
        match own {
            Some(mut sum) => f(&mut sum),
            None => match self.sums.last() {
                Some(m) => f(&mut m.lock().unwrap_or_else(|e| e.into_inner())),
                None => f(&mut []),
            },
        }
    }

    /// The total of all sums, in the first one.
    pub fn total(&mut self) -> &[T] {
        let mut sums = self
            .sums
            .iter_mut()
            .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner()));
        let Some(first) = sums.next() else {
            return &[];
        };
        for other in sums {
            first
                .par_chunks_mut(1 << 14)
                .zip(other.par_chunks(1 << 14))
                .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b));
        }
        first
    }
}

/// Everything a convolution call reuses between calls.
#[derive(Debug)]
pub(super) struct Workspace<T> {
    pub threads: ThreadBuffers<T>,
    pub partials: Partials<T>,
}

impl<T> Default for Workspace<T> {
    fn default() -> Self {
        Workspace {
            threads: ThreadBuffers::default(),
            partials: Partials::default(),
        }
    }
}
