//! Per-op wall time on the CPU, for finding where a CPU workload spends its time without a
//! sampling profiler.
//!
//! With `MEDVAE_CPU_PROFILE=1` every op's CPU path times itself: the timer starts at the
//! device check that opens it ([`super::cpu_only`]) and stops when the op returns. CPU ops run
//! to completion before they return, so the times are exact. An op that calls other ops is
//! counted in full (`total`) and without the ops it called (`self_time`), so the self times
//! add up to the time spent in ops (today no op calls another, and the two agree), and what
//! a workload spends outside them (autograd bookkeeping, allocation, glue) is the rest.
//! Every command that runs the model (`bench`, `finetune`, `infer`, `decode`, `eval`) prints
//! the ranking at its end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One op's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub calls: u64,
    /// Wall time from entry to return, ops it called included.
    pub total: Duration,
    /// `total` without the time of the ops it called.
    pub self_time: Duration,
}

/// Whether ops are being timed (read once from `MEDVAE_CPU_PROFILE`).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("MEDVAE_CPU_PROFILE")
            .map(|v| !v.is_empty() && v != "0")
            .unwrap_or(false)
    })
}

type Table = HashMap<&'static str, (u64, Duration, Duration)>;

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

thread_local! {
    /// The time of the ops called by each op open on this thread, innermost last.
    static OPEN: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) };
}

/// Times one op from its creation to its drop (nothing when profiling is off).
#[must_use = "the op is timed until this is dropped: bind it (`let _timer = ...`)"]
#[derive(Debug)]
pub struct OpTimer(Option<(&'static str, Instant)>);

impl OpTimer {
    pub(crate) fn start(op: &'static str) -> OpTimer {
        if !enabled() {
            return OpTimer(None);
        }
        OPEN.with(|open| open.borrow_mut().push(Duration::ZERO));
        OpTimer(Some((op, Instant::now())))
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        let Some((op, start)) = self.0 else { return };
        let total = start.elapsed();
        let called = OPEN.with(|open| {
            let mut open = open.borrow_mut();
            let called = open.pop().unwrap_or_default();
            if let Some(parent) = open.last_mut() {
                *parent += total;
            }
            called
        });
        let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
        let e = t.entry(op).or_default();
        e.0 += 1;
        e.1 += total;
        e.2 += total.saturating_sub(called);
    }
}

/// Totals so far, largest self time first.
pub fn report() -> Vec<OpTime> {
    let t = table().lock().unwrap_or_else(|p| p.into_inner());
    let mut v: Vec<OpTime> = t
        .iter()
        .map(|(&op, &(calls, total, self_time))| OpTime {
            op,
            calls,
            total,
            self_time,
        })
        .collect();
    v.sort_by_key(|o| std::cmp::Reverse(o.self_time));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Profiling is on only when the variable says so, so this checks the bookkeeping
    /// directly: a nested op's time is in its parent's total, not in its self time.
    #[test]
    fn nested_ops_count_in_the_parents_total_not_its_self_time() {
        let open = |op| {
            OPEN.with(|o| o.borrow_mut().push(Duration::ZERO));
            OpTimer(Some((op, Instant::now())))
        };
        {
            let _outer = open("profile_test_outer");
            std::thread::sleep(Duration::from_millis(20));
            {
                let _inner = open("profile_test_inner");
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let rows = report();
        let get = |op| rows.iter().find(|r| r.op == op).unwrap().clone();
        let (outer, inner) = (get("profile_test_outer"), get("profile_test_inner"));
        assert_eq!((outer.calls, inner.calls), (1, 1));
        assert_eq!(inner.total, inner.self_time);
        assert!(inner.total >= Duration::from_millis(30));
        assert!(outer.total >= inner.total + Duration::from_millis(20));
        // the outer op's self time is its total less exactly the inner op's total
        assert_eq!(outer.self_time, outer.total - inner.total);
        OPEN.with(|o| assert!(o.borrow().is_empty()));
    }
}
