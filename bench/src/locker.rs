//! Distributed locks as the locks scenario drives them: a [`Locker`] acquires and releases one
//! key for one client; [`Pairs`] makes one acquire+release pair of it a load-generator call
//! (so `load::drive` runs the contended cell) and checks the fencing tokens, when the service
//! hands them out; [`sequential`] runs the uncontended cell (a fixed number of pairs, one after
//! the other).
//!
//! The token checks are the only in-process check of exclusion: every hold of a key must get a
//! token of its own, and a client's tokens for a key must grow. (A holder flag set after the
//! acquisition and cleared before the release would see two holders at once only within the
//! instant between the two, since pairs hold nothing: not a check worth its name.)

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::load::Caller;
use crate::stats::Sample;

/// One client's handle on one key of a lock service.
pub(crate) trait Locker: Send + 'static {
    /// What a holder keeps until it releases (a guard, the lock's key...).
    type Held: Send;

    /// Takes the lock, waiting while another client holds it.
    fn acquire(&mut self) -> impl Future<Output = Result<Self::Held, String>> + Send;

    /// Gives it back.
    fn release(&mut self, held: Self::Held) -> impl Future<Output = Result<(), String>> + Send;

    /// The fencing token of a hold, if the service hands one out.
    fn token(_held: &Self::Held) -> Option<u64> {
        None
    }
}

/// What the in-process checks found, shared by every client of one run.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    /// Fencing tokens handed out, per key.
    tokens: Mutex<HashMap<String, HashSet<u64>>>,
    /// Tokens handed out twice for the same key.
    duplicate_tokens: AtomicU64,
    /// Tokens not above the previous one the same client got for the same key.
    tokens_not_increasing: AtomicU64,
}

impl Checks {
    /// Nothing found yet.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A fencing token was handed out twice for one key.
    pub(crate) fn duplicate_tokens(&self) -> u64 {
        self.duplicate_tokens.load(Ordering::Relaxed)
    }

    /// A client got a token not above its previous one for the same key.
    pub(crate) fn tokens_not_increasing(&self) -> u64 {
        self.tokens_not_increasing.load(Ordering::Relaxed)
    }

    /// Distinct fencing tokens recorded (0 when the service hands out none).
    pub(crate) fn tokens_seen(&self) -> usize {
        let tokens = self.tokens.lock().expect("checks lock");
        tokens.values().map(HashSet::len).sum()
    }

    /// The problems found, one line each (empty when none).
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.duplicate_tokens() > 0 {
            out.push(format!(
                "{} fencing tokens handed out twice for one key",
                self.duplicate_tokens()
            ));
        }
        if self.tokens_not_increasing() > 0 {
            out.push(format!(
                "{} fencing tokens not above the client's previous one for the key",
                self.tokens_not_increasing()
            ));
        }
        out
    }
}

/// One client: a [`Locker`] on `key`, whose calls are acquire+release pairs.
pub(crate) struct Pairs<L> {
    locker: L,
    key: String,
    checks: Arc<Checks>,
    last_token: Option<u64>,
}

impl<L: Locker> Pairs<L> {
    /// `locker` (which locks `key`), checked in `checks`.
    pub(crate) fn new(locker: L, key: &str, checks: &Arc<Checks>) -> Self {
        Self {
            locker,
            key: key.to_string(),
            checks: checks.clone(),
            last_token: None,
        }
    }

    fn check_token(&mut self, token: u64) {
        if self.last_token.is_some_and(|last| token <= last) {
            self.checks
                .tokens_not_increasing
                .fetch_add(1, Ordering::Relaxed);
        }
        self.last_token = Some(token);
        let mut tokens = self.checks.tokens.lock().expect("checks lock");
        let fresh = tokens.entry(self.key.clone()).or_default().insert(token);
        if !fresh {
            self.checks.duplicate_tokens.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<L: Locker> Caller for Pairs<L> {
    async fn call(&mut self) -> Result<(), String> {
        let held = self.locker.acquire().await?;
        if let Some(token) = L::token(&held) {
            self.check_token(token);
        }
        self.locker.release(held).await
    }
}

/// A run of consecutive failures after which [`sequential`] gives up.
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

/// `warmup` calls, then `count` measured ones, one after the other on a spawned task (never
/// the body of `#[tokio::main]`). Returns the sample and the measured calls' total time.
pub(crate) async fn sequential<C: Caller>(
    mut caller: C,
    warmup: usize,
    count: usize,
) -> (Sample, Duration) {
    let task = tokio::spawn(async move {
        let mut sample = Sample::default();
        let mut failures_in_a_row = 0;
        let mut start = Instant::now();
        for i in 0..warmup + count {
            if i == warmup {
                start = Instant::now();
            }
            let t0 = Instant::now();
            let result = caller.call().await;
            let took = t0.elapsed();
            let measured = i >= warmup;
            match result {
                Ok(()) => {
                    failures_in_a_row = 0;
                    if measured {
                        sample.record(took);
                    }
                }
                Err(e) => {
                    if measured {
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
        (sample, start.elapsed())
    });
    match task.await {
        Ok(done) => done,
        Err(e) => {
            let mut sample = Sample::default();
            sample.fail(|| format!("lock task failed: {e}"));
            (sample, Duration::ZERO)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{drive, Plan};

    /// A lock in process: a tokio mutex per key, held 1 ms per acquisition; tokens count up.
    struct Local {
        lock: Arc<tokio::sync::Mutex<u64>>,
    }

    impl Locker for Local {
        type Held = (tokio::sync::OwnedMutexGuard<u64>, u64);

        async fn acquire(&mut self) -> Result<Self::Held, String> {
            let mut guard = self.lock.clone().lock_owned().await;
            *guard += 1;
            let token = *guard;
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok((guard, token))
        }

        async fn release(&mut self, held: Self::Held) -> Result<(), String> {
            drop(held);
            Ok(())
        }

        fn token(held: &Self::Held) -> Option<u64> {
            Some(held.1)
        }
    }

    /// No lock at all: everyone "holds" at once, and gets the same token.
    struct Broken;

    impl Locker for Broken {
        type Held = ();

        async fn acquire(&mut self) -> Result<(), String> {
            Ok(())
        }

        async fn release(&mut self, (): ()) -> Result<(), String> {
            Ok(())
        }

        fn token((): &()) -> Option<u64> {
            Some(7)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn contended_pairs_share_the_lock_and_the_checks_stay_clean() {
        let checks = Checks::new();
        let locks: Vec<_> = (0..3)
            .map(|_| Arc::new(tokio::sync::Mutex::new(0)))
            .collect();
        let mut next = 0;
        let plan = Plan {
            concurrency: 6,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(100),
        };
        let sample = drive(plan, || {
            let i = next % 3;
            next += 1;
            Pairs::new(
                Local {
                    lock: locks[i].clone(),
                },
                &format!("k{i}"),
                &checks,
            )
        })
        .await;
        // Each key is held 1 ms at a time: about 100 acquisitions per key in 100 ms.
        assert!(
            (285..=300).contains(&sample.completed),
            "{}",
            sample.completed
        );
        assert_eq!(sample.errors, 0);
        assert!(checks.problems().is_empty(), "{:?}", checks.problems());
        assert!(checks.tokens_seen() as u64 >= sample.completed);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_and_stale_tokens_are_counted() {
        let checks = Checks::new();
        let (sample, _) = sequential(Pairs::new(Broken, "k", &checks), 0, 3).await;
        assert_eq!(sample.completed, 3);
        assert_eq!(checks.duplicate_tokens(), 2);
        assert_eq!(checks.tokens_not_increasing(), 2);
        assert_eq!(checks.problems().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_counts_only_measured_pairs() {
        let checks = Checks::new();
        let lock = Arc::new(tokio::sync::Mutex::new(0));
        let (sample, took) = sequential(Pairs::new(Local { lock }, "k", &checks), 5, 20).await;
        assert_eq!(sample.completed, 20);
        assert_eq!(took, Duration::from_millis(20));
        assert_eq!(checks.tokens_seen(), 25);
        let summary = sample.summarise(took, 0);
        assert_eq!(summary.throughput, 1_000.0);
    }
}
