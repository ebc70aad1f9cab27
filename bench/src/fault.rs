//! Faults injected into a run of the resilience scenario: which, when, and the run with it.

use std::future::Future;
use std::time::Duration;

use crate::load::{drive, Caller, Plan};
use crate::stats::Sample;

/// What goes wrong during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Fault {
    /// Nothing: the baseline.
    None,
    /// One server answers every call with "unavailable", from the start.
    #[value(name = "failing")]
    FailingServer,
    /// One server is killed with SIGKILL a third into the measured window ([`kill_at`]).
    Kill,
}

impl Fault {
    /// The cell's name in the report.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::FailingServer => "1 of 3 fails every call",
            Fault::Kill => "kill -9 of 1 of 3",
        }
    }
}

/// When a kill comes, from the start of the run: a third into the measured window, so that
/// the window holds the calls in flight at the kill and twice as long after it.
pub(crate) fn kill_at(plan: &Plan) -> Duration {
    plan.warmup + plan.duration / 3
}

/// Runs `plan` with callers made by `make` and, `at` after the start, `inject` (once); returns
/// the load's sample and what `inject` returned. Both run to their end.
pub(crate) async fn drive_with_fault<C: Caller, T>(
    plan: Plan,
    make: impl FnMut() -> C,
    at: Duration,
    inject: impl Future<Output = T>,
) -> (Sample, T) {
    let fault = async {
        tokio::time::sleep(at).await;
        inject.await
    };
    tokio::join!(drive(plan, make), fault)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;

    /// Takes 10 ms per call; fails once `broken` is set when the call ends.
    struct Fragile(Arc<AtomicBool>);

    impl Caller for Fragile {
        async fn call(&mut self) -> Result<(), String> {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.0.load(Ordering::SeqCst) {
                Err("broken".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn the_kill_comes_a_third_into_the_window() {
        let plan = Plan {
            concurrency: 64,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
        };
        assert_eq!(kill_at(&plan), Duration::from_millis(1_500));
        assert_eq!(Fault::Kill.label(), "kill -9 of 1 of 3");
    }

    #[tokio::test(start_paused = true)]
    async fn the_fault_fires_once_at_its_time_and_splits_the_calls() {
        // Warm-up 35 ms, window 300 ms: the fault fires at 35 + 100 = 135 ms, inside the call
        // running from 130 to 140 ms (no tie between the fault and a call's end).
        let plan = Plan {
            concurrency: 2,
            warmup: Duration::from_millis(35),
            duration: Duration::from_millis(300),
        };
        let broken = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        let fired = AtomicBool::new(false);
        let inject = async {
            assert!(!fired.swap(true, Ordering::SeqCst), "the fault fired twice");
            broken.store(true, Ordering::SeqCst);
            began.elapsed()
        };
        let (sample, when) =
            drive_with_fault(plan, || Fragile(broken.clone()), kill_at(&plan), inject).await;
        assert_eq!(when, Duration::from_millis(135));
        // Per task, calls start at 0, 10, ... ms. Counted: those starting at 40 ms or later.
        // Succeeded: 40 ... 120 (9 calls). Failed: 130 ... 330 (21 calls; a failure counts
        // when it starts in the window, even if it ends after it).
        assert_eq!(sample.completed, 2 * 9);
        assert_eq!(sample.errors, 2 * 21);
        assert_eq!(sample.first_error.as_deref(), Some("broken"));
    }
}
