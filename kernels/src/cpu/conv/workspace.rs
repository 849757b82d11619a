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
/// outside the pool's slots). Sums are zeroed on first use in a call, so idle ones cost
/// nothing.
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

impl<T: Real> Partials<T> {
    /// Start a reduction into sums of `len` elements: one per pool thread, plus the overflow.
    pub fn reset(&mut self, len: usize) {
        let n = rayon::current_num_threads() + 1;
        if self.sums.len() < n {
            self.sums.resize_with(n, || {
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

    /// Run `f` on the calling thread's sum (or the shared overflow sum).
    pub fn with<R>(&self, f: impl FnOnce(&mut [T]) -> R) -> R {
        let zeroed = |p: &mut PartialSum<T>| {
            if !p.used {
                p.sum.clear();
                p.sum.resize(self.len, T::zero());
                p.used = true;
            }
        };
        let own = rayon::current_thread_index()
            .filter(|&i| i + 1 < self.sums.len())
            .and_then(|i| self.sums[i].try_lock().ok());
        match own {
            Some(mut p) => {
                zeroed(&mut p);
                f(&mut p.sum)
            }
            None => match self.sums.last() {
                Some(m) => {
                    let mut p = m.lock().unwrap_or_else(|e| e.into_inner());
                    zeroed(&mut p);
                    f(&mut p.sum)
                }
                None => f(&mut vec![T::zero(); self.len]),
            },
        }
    }

    /// Add the total of the sums used since [`reset`](Self::reset) to `dst`.
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
