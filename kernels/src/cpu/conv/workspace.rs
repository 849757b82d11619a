//! Buffers that survive between calls, so that a training step reusing a [`ConvScratch`]
//! does not allocate (and page-fault in) megabytes of task buffers on every convolution.
//!
//! [`ConvScratch`]: super::ConvScratch

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

/// Per-group partial sums of a parallel reduction (weight gradients).
#[derive(Debug)]
pub(super) struct Partials<T> {
    sums: Vec<Vec<T>>,
}

impl<T> Default for Partials<T> {
    fn default() -> Self {
        Partials { sums: Vec::new() }
    }
}

impl<T: num_traits::Zero + Clone> Partials<T> {
    /// `groups` zeroed accumulators of `len` elements each.
    pub fn zeroed(&mut self, groups: usize, len: usize) -> &mut [Vec<T>] {
        if self.sums.len() < groups {
            self.sums.resize_with(groups, Vec::new);
        }
        for p in &mut self.sums[..groups] {
            p.clear();
            p.resize(len, T::zero());
        }
        &mut self.sums[..groups]
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
