//! Where the tensor-memory peak is reached.
//!
//! A peak figure alone does not say which layer to change. With `MEDVAE_MEMORY_TRACE=1`
//! every allocation that raises the peak of live tensor bytes (the CPU pool's or a CUDA
//! device pool's) records its call stack, keeping the last one, so [`report`] names the
//! allocation at the high-water mark. Capturing a stack costs tens of microseconds; only
//! allocations that set a new peak pay it, and only when the variable is set.

use std::backtrace::Backtrace;
use std::sync::{Mutex, OnceLock};

/// The environment variable that turns tracing on (`1`, `true` or `on`).
pub const TRACE_ENV: &str = "MEDVAE_MEMORY_TRACE";

struct PeakSite {
    live_bytes: usize,
    requested_bytes: usize,
    stack: Backtrace,
}

static ENABLED: OnceLock<bool> = OnceLock::new();
static LAST_PEAK: Mutex<Option<PeakSite>> = Mutex::new(None);

/// Whether peak sites are being recorded (read once from [`TRACE_ENV`]).
pub fn enabled() -> bool {
    *ENABLED.get_or_init(|| {
        std::env::var(TRACE_ENV)
            .map(|v| matches!(v.trim(), "1" | "true" | "on"))
            .unwrap_or(false)
    })
}

/// Record that an allocation of `requested_bytes` brought live bytes to a new peak.
pub(crate) fn record_peak(live_bytes: usize, requested_bytes: usize) {
    if !enabled() {
        return;
    }
    let stack = Backtrace::force_capture();
    if let Ok(mut last) = LAST_PEAK.lock() {
        // Pools on several threads may race; keep the higher of the two.
        if last.as_ref().is_none_or(|s| s.live_bytes <= live_bytes) {
            *last = Some(PeakSite {
                live_bytes,
                requested_bytes,
                stack,
            });
        }
    }
}

/// Forget the recorded site (with `reset_peak`, to trace one workload at a time).
pub fn reset() {
    if let Ok(mut last) = LAST_PEAK.lock() {
        *last = None;
    }
}

/// The recorded peak: its size, the allocation that reached it and the medvae frames of its
/// call stack (innermost first). `None` when tracing is off or nothing was allocated.
pub fn report() -> Option<String> {
    let last = LAST_PEAK.lock().ok()?;
    let site = last.as_ref()?;
    let mut out = format!(
        "memory peak {:.1} MiB of live tensors, reached by an allocation of {:.1} MiB at:\n",
        mib(site.live_bytes),
        mib(site.requested_bytes)
    );
    for line in medvae_frames(&site.stack.to_string()) {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    Some(out)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// The frames of a rendered backtrace that belong to this workspace's crates, each as
/// `function (file:line)`, without the tracer's own frames.
fn medvae_frames(rendered: &str) -> Vec<String> {
    let mut frames = Vec::new();
    let mut lines = rendered.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((_, function)) = line.trim().split_once(": ") else {
            continue;
        };
        let location = match lines.peek() {
            Some(next) if next.trim_start().starts_with("at ") => {
                lines.next().map(|l| l.trim_start()[3..].to_string())
            }
            _ => None,
        };
        let ours = function.starts_with("medvae_") || function.starts_with("<medvae_");
        if !ours || function.contains("memory_trace") || function.contains("memory::") {
            continue;
        }
        let short = location
            .as_deref()
            .map(|l| format!(" ({})", workspace_relative(l)))
            .unwrap_or_default();
        frames.push(format!("{}{short}", strip_hash(function)));
    }
    frames
}

/// A source path relative to the workspace this crate was built in.
fn workspace_relative(path: &str) -> &str {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.to_str())
        .unwrap_or("");
    path.strip_prefix(root)
        .map(|p| p.trim_start_matches('/'))
        .unwrap_or(path)
}

/// `medvae_model::x::f::h0123abcd` → `medvae_model::x::f`.
fn strip_hash(function: &str) -> &str {
    match function.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head
        }
        _ => function,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_workspace_frames_with_their_locations() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .and_then(|p| p.to_str())
            .unwrap_or("");
        let rendered = "\
   0: std::backtrace::Backtrace::force_capture
             at /rustc/abc/library/std/src/backtrace.rs:312:13
   1: medvae_runtime::memory_trace::record_peak
             at ROOT/runtime/src/memory_trace.rs:40:17
   2: medvae_model::blocks::resnet::ResnetBlock::run_backward::h0123456789abcdef
             at ROOT/model/src/blocks/resnet.rs:120:9
   3: core::ops::function::FnOnce::call_once
   4: <medvae_model::blocks::mid::MidBlock as medvae_model::layer::Layer>::backward
"
        .replace("ROOT", root);
        assert_eq!(
            medvae_frames(&rendered),
            vec![
                "medvae_model::blocks::resnet::ResnetBlock::run_backward \
                 (model/src/blocks/resnet.rs:120:9)"
                    .to_string(),
                "<medvae_model::blocks::mid::MidBlock as medvae_model::layer::Layer>::backward"
                    .to_string(),
            ]
        );
    }
}
