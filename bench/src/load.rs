//! The closed-loop load generator shared by every scenario.
//!
//! Concurrency N means N tasks spawned on the runtime (never the body of `#[tokio::main]`, which
//! is not a worker thread and runs loops several times slower), each making one call after the
//! other. The clock starts after the warm-up: a call counts when it both starts and ends inside
//! the measured window, and its latency goes into the task's own histogram. The tasks' samples
//! are merged when the window closes.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::stats::Sample;

/// A task stops calling after this many failures in a row (the server is probably gone).
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

/// One side of a benchmark, as seen by one load task: makes one call per `call`.
pub(crate) trait Caller: Send + 'static {
    /// Makes one call and checks its reply.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// How long and how hard to drive one cell.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Concurrent tasks, each calling in sequence.
    pub(crate) concurrency: usize,
    /// Calls before the clock starts (connections warm, caches and pools filled).
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) duration: Duration,
}

/// Runs `plan` with one caller per task, made by `make`, and returns the merged sample.
pub(crate) async fn drive<C: Caller>(plan: Plan, mut make: impl FnMut() -> C) -> Sample {
    let start = Instant::now() + plan.warmup;
    let end = start + plan.duration;
    let tasks: Vec<_> = (0..plan.concurrency.max(1))
        .map(|_| tokio::spawn(one_task(make(), start, end)))
        .collect();
    let mut total = Sample::default();
    for task in tasks {
        match task.await {
            Ok(sample) => total.merge(&sample),
            Err(e) => total.fail(|| format!("load task failed: {e}")),
        }
    }
    total
}

async fn one_task<C: Caller>(mut caller: C, start: Instant, end: Instant) -> Sample {
    let mut sample = Sample::default();
    let mut failures_in_a_row = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let result = caller.call().await;
        let t1 = Instant::now();
        match result {
            Ok(()) => {
                failures_in_a_row = 0;
                if t0 >= start && t1 <= end {
                    sample.record(t1 - t0);
                }
            }
            Err(e) => {
                if t0 >= start {
                    sample.fail(|| e);
                }
                failures_in_a_row += 1;
                if failures_in_a_row >= MAX_CONSECUTIVE_ERRORS {
                    sample.fail(|| format!("gave up after {MAX_CONSECUTIVE_ERRORS} failures"));
                    break;
                }
            }
        }
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleeper(Duration);
    impl Caller for Sleeper {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    struct Broken;
    impl Caller for Broken {
        async fn call(&mut self) -> Result<(), String> {
            tokio::task::yield_now().await;
            Err("refused".into())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_only_calls_inside_the_window() {
        let plan = Plan {
            concurrency: 4,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
        };
        let sample = drive(plan, || Sleeper(Duration::from_millis(10))).await;
        // 4 tasks x ~200 ms / ~10+ ms per call: at most 80 calls, and timers are not early.
        assert!(sample.completed <= 80, "{}", sample.completed);
        assert!(sample.completed >= 20, "{}", sample.completed);
        assert_eq!(sample.errors, 0);
        assert!(
            sample.latency.min() >= 10_000_000,
            "no call is faster than its sleep"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_peer_ends_the_run_with_errors() {
        let plan = Plan {
            concurrency: 2,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
        };
        let started = Instant::now();
        let sample = drive(plan, || Broken).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "tasks gave up early"
        );
        assert_eq!(sample.completed, 0);
        assert!(sample.errors >= 2 * u64::from(MAX_CONSECUTIVE_ERRORS));
        assert_eq!(sample.first_error.as_deref(), Some("refused"));
    }
}
