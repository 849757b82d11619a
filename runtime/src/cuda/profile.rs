//! Per-kernel wall time for finding where a CUDA workload spends its time.
//!
//! With `MEDVAE_CUDA_PROFILE=1` every kernel launch waits for the stream before and after
//! itself and adds the elapsed time to its entry point's total. This serialises the device, so
//! the totals are for ranking kernels, not for end-to-end timing (`medvae-fast bench` prints
//! them after its JSON line when the variable is set).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// One kernel's total.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    pub entry: String,
    pub launches: u64,
    pub total: Duration,
}

/// Whether launches are being timed (read once from `MEDVAE_CUDA_PROFILE`).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("MEDVAE_CUDA_PROFILE")
            .map(|v| !v.is_empty() && v != "0")
            .unwrap_or(false)
    })
}

fn table() -> &'static Mutex<HashMap<String, (u64, Duration)>> {
    static TABLE: OnceLock<Mutex<HashMap<String, (u64, Duration)>>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(crate) fn record(entry: &str, elapsed: Duration) {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    let e = t.entry(entry.to_string()).or_default();
    e.0 += 1;
    e.1 += elapsed;
}

/// Totals so far, largest first.
pub fn report() -> Vec<KernelTime> {
    let t = table().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<KernelTime> = t
        .iter()
        .map(|(k, (n, d))| KernelTime {
            entry: k.clone(),
            launches: *n,
            total: *d,
        })
        .collect();
    v.sort_by_key(|k| std::cmp::Reverse(k.total));
    v
}
