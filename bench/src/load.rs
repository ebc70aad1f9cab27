//! The closed-loop load generator shared by every scenario.
//!
//! Concurrency N means N tasks spawned on the runtime (never the body of `#[tokio::main]`, which
//! is not a worker thread and runs loops several times slower), each making one call after the
//! other. The clock starts after the warm-up: a call counts when it both starts and ends inside
//! the measured window, and its latency goes into the task's own histogram. The tasks' samples
//! are merged when the window closes.
//!
//! Time is read from tokio's clock ([`tokio::time::Instant`]): in a real run it is the system's
//! monotonic clock, and under a paused test runtime it is the simulated one, so the window and
//! the latencies can be tested exactly.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

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

    // Every test runs on tokio's paused clock: time moves only when all tasks wait on a timer,
    // by exactly the time they wait, so counts and latencies are exact.

    struct Sleeper(Duration);
    impl Caller for Sleeper {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    /// Fails every call, after 1 ms: a task that never gave up would fail 30,000 times in a
    /// 30 s window (and a peer failing at once would stall the paused clock).
    struct Broken;
    impl Caller for Broken {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Err("refused".into())
        }
    }

    /// Runs 4 tasks making `per_call`-long calls through a 50 ms warm-up and a 200 ms window.
    async fn run_sleepers(per_call: Duration) -> Sample {
        let plan = Plan {
            concurrency: 4,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
        };
        drive(plan, || Sleeper(per_call)).await
    }

    /// Asserts that every latency recorded is `expected` (to the histogram's resolution).
    fn assert_all_latencies(sample: &Sample, expected: Duration) {
        let ns = u64::try_from(expected.as_nanos()).unwrap();
        assert_eq!(sample.latency.len(), sample.completed);
        assert_eq!(sample.latency.count_at(ns), sample.completed);
        assert_eq!(sample.latency.min(), sample.latency.lowest_equivalent(ns));
        assert_eq!(sample.latency.max(), sample.latency.highest_equivalent(ns));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_ending_as_the_window_closes_counts() {
        // Calls start at 0, 10, ... 240 ms; those starting at 50 ... 240 ms (ending at 60 ...
        // 250 ms, the last one exactly when the window closes) count: 20 per task.
        let sample = run_sleepers(Duration::from_millis(10)).await;
        assert_eq!(sample.completed, 4 * 20);
        assert_eq!(sample.errors, 0);
        assert_all_latencies(&sample, Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_straddling_either_edge_of_the_window_do_not_count() {
        // Calls start at 0, 30, ... 240 ms. The one from 30 to 60 ms started in the warm-up and
        // the one from 240 to 270 ms ends after the window: 60 ... 210 ms count, 6 per task.
        let sample = run_sleepers(Duration::from_millis(30)).await;
        assert_eq!(sample.completed, 4 * 6);
        assert_eq!(sample.errors, 0);
        assert_all_latencies(&sample, Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_peer_ends_the_run_with_errors() {
        let plan = Plan {
            concurrency: 2,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
        };
        let sample = drive(plan, || Broken).await;
        assert_eq!(sample.completed, 0);
        // Each task records its MAX_CONSECUTIVE_ERRORS failed calls, then one for giving up.
        assert_eq!(sample.errors, 2 * (u64::from(MAX_CONSECUTIVE_ERRORS) + 1));
        assert_eq!(sample.first_error.as_deref(), Some("refused"));
    }
}
