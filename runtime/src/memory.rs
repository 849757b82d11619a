//! A caching pool for CPU tensor buffers.
//!
//! Training steps allocate the same activation sizes every step; returning freed buffers to
//! size-bucketed free lists means a steady-state step makes no calls into the system
//! allocator. The pool also tracks the bytes held by live tensors and their peak, which the
//! benches report as peak memory.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers below this many elements are not worth pooling: they come and go with the allocator.
const MIN_POOLED_ELEMS: usize = 1024;
/// The pool keeps at most this many bytes of idle buffers; beyond that freed buffers are dropped.
const MAX_IDLE_BYTES: usize = 4 << 30;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
static IDLE_BYTES: AtomicUsize = AtomicUsize::new(0);
static FRESH_ALLOCS: AtomicUsize = AtomicUsize::new(0);
static POOL: Mutex<Option<HashMap<usize, Vec<Vec<f32>>>>> = Mutex::new(None);
/// Source of [`PoolBuf::version`] numbers; 0 is never handed out.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn fresh_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

/// Snapshot of the pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live tensors now.
    pub live_bytes: usize,
    /// Highest `live_bytes` since start (or the last [`reset_peak`]).
    pub peak_bytes: usize,
    /// Bytes of freed buffers kept for reuse.
    pub idle_bytes: usize,
    /// Buffers that had to come from the system allocator (a steady state adds none).
    pub fresh_allocations: usize,
}

pub fn stats() -> MemoryStats {
    MemoryStats {
        live_bytes: LIVE_BYTES.load(Ordering::Relaxed),
        peak_bytes: PEAK_BYTES.load(Ordering::Relaxed),
        idle_bytes: IDLE_BYTES.load(Ordering::Relaxed),
        fresh_allocations: FRESH_ALLOCS.load(Ordering::Relaxed),
    }
}

/// Restart peak tracking from the current live size (e.g. before timing one step).
pub fn reset_peak() {
    crate::memory_trace::reset();
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Drop every idle buffer (returns memory to the system).
pub fn trim() {
    if let Ok(mut guard) = POOL.lock() {
        *guard = None;
    }
    IDLE_BYTES.store(0, Ordering::Relaxed);
}

fn bucket(len: usize) -> usize {
    len.next_power_of_two()
}

/// An f32 buffer that returns to the pool when dropped.
#[derive(Debug)]
pub struct PoolBuf {
    data: Vec<f32>,
    len: usize,
    /// See [`PoolBuf::version`].
    version: u64,
}

impl PoolBuf {
    /// A buffer of `len` elements with unspecified (but initialised) contents: for outputs that
    /// a kernel overwrites completely.
    pub fn uninit(len: usize) -> Self {
        let mut data = take_from_pool(len);
        if data.len() < len {
            data.resize(len, 0.0);
        }
        track_alloc(len);
        PoolBuf {
            data,
            len,
            version: fresh_version(),
        }
    }

    /// A zero-filled buffer of `len` elements.
    pub fn zeros(len: usize) -> Self {
        let mut b = Self::uninit(len);
        b.fill(0.0);
        b
    }

    /// Adopt an existing vector (its memory joins the pool when dropped).
    pub fn from_vec(data: Vec<f32>) -> Self {
        let len = data.len();
        track_alloc(len);
        PoolBuf {
            data,
            len,
            version: fresh_version(),
        }
    }

    /// Copy out into a plain vector.
    pub fn to_vec(&self) -> Vec<f32> {
        self.data[..self.len].to_vec()
    }

    /// A number that names these contents: it is unique to this buffer (never reused within
    /// the process), changes on every mutable access, and is kept by a clone, whose contents
    /// are the same. Whoever derives data from a buffer (a transformed weight) can check with it
    /// that the buffer has not changed since, without reading it.
    pub fn version(&self) -> u64 {
        self.version
    }
}

fn track_alloc(len: usize) {
    let bytes = len * 4;
    let live = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if PEAK_BYTES.fetch_max(live, Ordering::Relaxed) < live {
        crate::memory_trace::record_peak(live, bytes);
    }
}

fn take_from_pool(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED_ELEMS {
        let key = bucket(len);
        if let Ok(mut guard) = POOL.lock() {
            if let Some(v) = guard
                .as_mut()
                .and_then(|m| m.get_mut(&key))
                .and_then(|l| l.pop())
            {
                IDLE_BYTES.fetch_sub(v.capacity() * 4, Ordering::Relaxed);
                return v;
            }
        }
        FRESH_ALLOCS.fetch_add(1, Ordering::Relaxed);
        let mut v = Vec::with_capacity(key);
        v.resize(len, 0.0);
        return v;
    }
    vec![0.0; len]
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        LIVE_BYTES.fetch_sub(self.len * 4, Ordering::Relaxed);
        let cap = self.data.capacity();
        // Only exact power-of-two capacities came from (or fit) a bucket.
        if self.len < MIN_POOLED_ELEMS || !cap.is_power_of_two() {
            return;
        }
        if IDLE_BYTES.load(Ordering::Relaxed) + cap * 4 > MAX_IDLE_BYTES {
            return;
        }
        let v = std::mem::take(&mut self.data);
        if let Ok(mut guard) = POOL.lock() {
            IDLE_BYTES.fetch_add(cap * 4, Ordering::Relaxed);
            guard
                .get_or_insert_with(HashMap::new)
                .entry(cap)
                .or_default()
                .push(v);
        }
    }
}

impl Clone for PoolBuf {
    fn clone(&self) -> Self {
        let mut b = PoolBuf::uninit(self.len);
        b.copy_from_slice(self);
        b.version = self.version;
        b
    }
}

impl Deref for PoolBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data[..self.len]
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // Any writer may change the contents.
        self.version = fresh_version();
        &mut self.data[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_freed_buffers_and_tracks_peak() {
        // Other tests of this binary allocate, free and reset the peak concurrently, so the
        // counters are read while this test's own buffer is alive, where they must include it.
        let during = {
            let _a = PoolBuf::zeros(1 << 20);
            stats()
        };
        let after_first = stats();
        {
            let b = PoolBuf::uninit(1 << 20);
            assert_eq!(b.len(), 1 << 20);
        }
        let after_second = stats();
        // The second buffer of the same bucket must come from the pool, not the allocator.
        assert_eq!(
            after_second.fresh_allocations,
            after_first.fresh_allocations
        );
        assert!(during.live_bytes >= 4 << 20 && during.peak_bytes >= 4 << 20);
    }

    #[test]
    fn version_changes_with_every_write_and_only_then() {
        let mut a = PoolBuf::from_vec(vec![1.0; 4096]);
        let v0 = a.version();
        let _ = a[0] + a.iter().sum::<f32>();
        assert_eq!(a.version(), v0, "reading must keep the version");
        let copy = a.clone();
        assert_eq!(copy.version(), v0, "a clone has the same contents");
        a[3] = 2.0;
        let v1 = a.version();
        assert_ne!(v1, v0, "a write must change the version");
        assert_eq!(copy.version(), v0, "the clone was not written");
        drop(copy);
        // A buffer recycled through the pool is a new buffer: it must not inherit a number.
        let reused = PoolBuf::uninit(4096);
        assert!(reused.version() != v0 && reused.version() != v1);
    }
}
