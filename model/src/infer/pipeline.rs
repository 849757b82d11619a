//! Reading, computing and writing files at the same time.
//!
//! An archive run has three stages per file: read and preprocess (gunzip, reorientation,
//! intensity, crop: 1.8 s for a 512×512×300 CT), the model, and writing the outputs (gzip:
//! 1.1 s for a float32 reconstruction of that CT). Run one after the other, a GPU waits for
//! the CPU for most of a file. Here the first and last stages run on their own threads, so the
//! device thread only runs the model: while it computes file n, file n + 1 is being read and
//! file n − 1 written.
//!
//! The stages hand over through rendezvous channels (a hand-over waits until the next stage
//! takes the file), so at most three files are in memory: one being read, one in the model,
//! one being written. A whole-body CT is gigabytes once preprocessed, and reading further
//! ahead would gain nothing while the model is the slowest stage. Files reach `finish` in the
//! order `next_job` gave them.
//!
//! `MEDVAE_PIPELINE=off` runs the three stages one after the other on the calling thread, to
//! measure what the overlap saves (`scripts/gpu-check.sh`, step `infer-overlap`).

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

/// How long each stage was busy (waiting for its neighbours not counted): the largest bounds
/// the run, so this says whether reading, the model or writing is what to speed up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    pub read: Duration,
    pub compute: Duration,
    pub write: Duration,
}

impl std::ops::AddAssign for StageTimes {
    fn add_assign(&mut self, o: StageTimes) {
        self.read += o.read;
        self.compute += o.compute;
        self.write += o.write;
    }
}

impl StageTimes {
    /// `read and preprocess 1.2 s, model 3.4 s, <last> 0.5 s`.
    pub fn line(&self, last: &str) -> String {
        format!(
            "read and preprocess {:.1} s, model {:.1} s, {last} {:.1} s",
            self.read.as_secs_f64(),
            self.compute.as_secs_f64(),
            self.write.as_secs_f64()
        )
    }
}

/// `f()`, and the time it took added to `total`.
fn timed<T>(total: &mut Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *total += start.elapsed();
    out
}

/// Run every job `next_job` gives through `prepare` (reader thread), `compute` (this thread)
/// and `finish` (writer thread), overlapped; returns when every job taken is finished, with
/// how long each stage was busy.
///
/// * `next_job` returns `None` when there is nothing more to read;
/// * an `Err` from `prepare` skips `compute` and reaches `finish` as it is;
/// * `keep_going` is asked before each file is read and before each `compute`: when it says
///   no, the reader stops, the file already read is dropped unfinished (it never reaches
///   `finish`), and the file being written is still finished.
pub fn pipelined<J, P, O, E>(
    mut next_job: impl FnMut() -> Option<J> + Send,
    prepare: impl Fn(&J) -> Result<P, E> + Send,
    mut compute: impl FnMut(&J, P) -> Result<O, E>,
    mut finish: impl FnMut(J, Result<O, E>) + Send,
    keep_going: impl Fn() -> bool + Sync,
) -> StageTimes
where
    J: Send,
    P: Send,
    O: Send,
    E: Send,
{
    let mut times = StageTimes::default();
    if std::env::var_os("MEDVAE_PIPELINE").is_some_and(|v| v == "off") {
        while keep_going() {
            let Some(job) = next_job() else { break };
            let out = timed(&mut times.read, || prepare(&job))
                .and_then(|p| timed(&mut times.compute, || compute(&job, p)));
            timed(&mut times.write, || finish(job, out));
        }
        return times;
    }
    let (to_device, from_reader) = sync_channel::<(J, Result<P, E>)>(0);
    let (to_writer, from_device) = sync_channel::<(J, Result<O, E>)>(0);
    let keep_going = &keep_going;
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut busy = Duration::ZERO;
            while keep_going() {
                let Some(job) = next_job() else { break };
                let prepared = timed(&mut busy, || prepare(&job));
                // The device has stopped: nothing more is wanted.
                if to_device.send((job, prepared)).is_err() {
                    break;
                }
            }
            busy
        });
        let writer = scope.spawn(move || {
            let mut busy = Duration::ZERO;
            for (job, out) in from_device {
                timed(&mut busy, || finish(job, out));
            }
            busy
        });
        for (job, prepared) in from_reader.iter() {
            if !keep_going() {
                break;
            }
            let out = prepared.and_then(|p| timed(&mut times.compute, || compute(&job, p)));
            if to_writer.send((job, out)).is_err() {
                break;
            }
        }
        // Dropping the receiving end stops the reader at its next file; dropping the sender
        // lets the writer finish what it holds and end.
        drop(from_reader);
        drop(to_writer);
        // A stage that panicked goes on panicking here, as it would have at the scope's end.
        let join = |stage: std::thread::ScopedJoinHandle<'_, Duration>| {
            stage
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        times.read = join(reader);
        times.write = join(writer);
    });
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn every_job_reaches_finish_in_order_with_its_errors() {
        let next = AtomicUsize::new(0);
        let finished = Mutex::new(Vec::new());
        let computed = AtomicUsize::new(0);
        pipelined(
            || Some(next.fetch_add(1, Ordering::Relaxed)).filter(|&j| j < 20),
            |&j| {
                if j % 7 == 3 {
                    Err(format!("unreadable {j}"))
                } else {
                    Ok(j * 10)
                }
            },
            |&j, p| {
                computed.fetch_add(1, Ordering::Relaxed);
                if j == 11 {
                    Err("model failed".to_string())
                } else {
                    Ok(p + 1)
                }
            },
            |j, out| finished.lock().unwrap().push((j, out)),
            || true,
        );
        let finished = finished.into_inner().unwrap();
        let jobs: Vec<usize> = finished.iter().map(|(j, _)| *j).collect();
        assert_eq!(jobs, (0..20).collect::<Vec<_>>());
        for (j, out) in finished {
            let want = match j {
                3 | 10 | 17 => Err(format!("unreadable {j}")),
                11 => Err("model failed".to_string()),
                _ => Ok(j * 10 + 1),
            };
            assert_eq!(out, want, "job {j}");
        }
        // jobs whose reading failed never reach the model
        assert_eq!(computed.into_inner(), 17);
    }

    /// The point of the pipeline, without timing anything: the model's stage for file `j`
    /// waits until file `j + 1` is being read and file `j − 1` written. Run one after the other,
    /// those would never start, and the waits would give up.
    #[test]
    fn the_next_file_is_read_and_the_last_written_while_the_model_runs() {
        use std::sync::Condvar;
        use std::time::Duration;
        const JOBS: usize = 4;
        // (reads started, writes started)
        let started = (Mutex::new((0usize, 0usize)), Condvar::new());
        let bump = |read: bool| {
            let mut s = started.0.lock().unwrap();
            if read {
                s.0 += 1;
            } else {
                s.1 += 1;
            }
            started.1.notify_all();
        };
        let next = AtomicUsize::new(0);
        let overlapped = Mutex::new(Vec::new());
        pipelined(
            || Some(next.fetch_add(1, Ordering::Relaxed)).filter(|&j| j < JOBS),
            |&j| {
                bump(true);
                Ok::<_, ()>(j)
            },
            |&j, p| {
                let reads = if j + 1 < JOBS { j + 2 } else { JOBS };
                let guard = started.0.lock().unwrap();
                let (_guard, waited) = started
                    .1
                    .wait_timeout_while(guard, Duration::from_secs(3), |s| s.0 < reads || s.1 < j)
                    .unwrap();
                overlapped.lock().unwrap().push((j, !waited.timed_out()));
                Ok(p)
            },
            |_, _| bump(false),
            || true,
        );
        let overlapped = overlapped.into_inner().unwrap();
        assert_eq!(overlapped, (0..JOBS).map(|j| (j, true)).collect::<Vec<_>>());
    }

    #[test]
    fn stopping_drops_what_was_read_but_finishes_what_was_computed() {
        let next = AtomicUsize::new(0);
        let computed = AtomicUsize::new(0);
        let finished = Mutex::new(Vec::new());
        pipelined(
            || Some(next.fetch_add(1, Ordering::Relaxed)).filter(|&j| j < 1000),
            |&j| Ok::<_, ()>(j),
            |_, p| {
                computed.fetch_add(1, Ordering::Relaxed);
                Ok(p)
            },
            |j, out| finished.lock().unwrap().push((j, out)),
            || computed.load(Ordering::Relaxed) < 5,
        );
        let finished = finished.into_inner().unwrap();
        assert_eq!(computed.into_inner(), 5);
        assert_eq!(
            finished,
            (0..5).map(|j| (j, Ok(j))).collect::<Vec<_>>(),
            "the five computed files are finished, nothing else"
        );
        // the reader stopped soon after: it reads at most a few files ahead
        assert!(next.into_inner() <= 5 + 4);
    }
}
