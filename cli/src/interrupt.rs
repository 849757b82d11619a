//! Ctrl-C (SIGINT) and SIGTERM during a long command: the first one asks it to stop after the
//! work in progress (`finetune`: the step, then `checkpoints/last`, so that `resume_from_ckpt`
//! continues exactly where it stopped; `infer`: the files being encoded, then the summary);
//! a second one ends the process at once.
//!
//! SIGTERM is what cluster schedulers (SLURM, Kubernetes) send before killing a preempted or
//! timed-out job, so a run that gets it within its grace period loses nothing. The handler
//! only stores the signal and writes one line with `write(2)`: both are async-signal-safe.

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
extern "C" fn on_signal(signal: libc::c_int) {
    if RECEIVED.swap(signal, Ordering::SeqCst) != 0 {
        // Asked twice: leave now. A checkpoint being written is safe either way (it is
        // renamed into place only when complete).
        // SAFETY: _exit is async-signal-safe and takes any status.
        unsafe { libc::_exit(128 + signal) };
    }
    let msg: &[u8] = b"\nstopping after the work in progress \
                       (send the signal again to quit at once)\n";
    // SAFETY: write(2) on stderr with a valid buffer is async-signal-safe; a failed write
    // is of no consequence.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Catch SIGINT and SIGTERM from now on (a no-op off Unix).
pub fn install() {
    #[cfg(unix)]
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler is an extern "C" fn of the right signature that only touches an
        // atomic and async-signal-safe calls.
        unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// A signal's name, for the message.
pub fn name(signal: i32) -> &'static str {
    #[cfg(unix)]
    match signal {
        libc::SIGINT => return "SIGINT",
        libc::SIGTERM => return "SIGTERM",
        _ => {}
    }
    let _ = signal;
    "a signal"
}

/// The shell's status for a command that `signal` stopped: 128 + its number (130 for SIGINT,
/// 143 for SIGTERM).
pub fn exit_code(signal: i32) -> ExitCode {
    ExitCode::from((128 + signal).clamp(1, 255) as u8)
}
