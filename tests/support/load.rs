//! Callers that keep calling until told to stop, and what they saw.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony::Client;
use tokio::task::JoinSet;

use crate::*;

/// Longest a load runs, whatever happens: every wait of a test is shorter.
pub const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// When a calling task stops on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Only when the load is stopped (or after [`LOAD_LIMIT`]).
    Stopped,
    /// After its first failed call, too.
    FirstFailure,
}

/// What a load's callers saw.
#[derive(Debug, Default)]
pub struct Tally {
    completed: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    slowest_us: AtomicU64,
    /// Set by [`Load::mark`]: the longest call from then on is kept apart.
    marked: AtomicBool,
    slowest_after_mark_us: AtomicU64,
}

impl Tally {
    /// Calls finished, successful or not.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// Calls that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Every failure, as its caller described it, in the order they happened.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// The longest call.
    pub fn slowest(&self) -> Duration {
        Duration::from_micros(self.slowest_us.load(Ordering::SeqCst))
    }

    /// The longest call that finished after [`Load::mark`].
    pub fn slowest_after_mark(&self) -> Duration {
        Duration::from_micros(self.slowest_after_mark_us.load(Ordering::SeqCst))
    }

    /// `N calls, F failed` and the first failures, for assertion messages.
    pub fn describe(&self) -> String {
        let errors = self.errors();
        let shown: Vec<&String> = errors.iter().take(20).collect();
        format!(
            "{} calls, {} failed; first failures: {shown:#?}",
            self.completed(),
            self.failed()
        )
    }
}

/// `callers` tasks, each making calls one after the other (`call(task, i)` for its `i`-th call)
/// until the load is stopped, [`LOAD_LIMIT`] passes, or, with [`Until::FirstFailure`], its
/// first call fails. A call is a success when it returns `Ok`; `Err` carries a description.
pub struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
    started: Instant,
}

impl Load {
    /// Starts the callers.
    pub fn start<F, Fut>(callers: usize, until: Until, call: F) -> Self
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let call = Arc::new(call);
        let mut tasks = JoinSet::new();
        for task in 0..callers {
            let (tally, stop, call) = (tally.clone(), stop.clone(), call.clone());
            tasks.spawn(async move {
                let give_up = Instant::now() + LOAD_LIMIT;
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
                    let start = Instant::now();
                    let outcome = call(task, i).await;
                    let us = start.elapsed().as_micros() as u64;
                    tally.slowest_us.fetch_max(us, Ordering::SeqCst);
                    if tally.marked.load(Ordering::SeqCst) {
                        tally.slowest_after_mark_us.fetch_max(us, Ordering::SeqCst);
                    }
                    let failed = outcome.is_err();
                    if let Err(e) = outcome {
                        tally
                            .errors
                            .lock()
                            .unwrap()
                            .push(format!("caller {task}, call {i} ({us} µs): {e}"));
                        tally.failed.fetch_add(1, Ordering::SeqCst);
                    }
                    tally.completed.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                    if failed && until == Until::FirstFailure {
                        break;
                    }
                }
            });
        }
        Self {
            tally,
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    /// From now on the longest call is also kept apart (e.g. the calls after a fault).
    pub fn mark(&self) {
        self.tally.marked.store(true, Ordering::SeqCst);
    }

    /// What the callers saw so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Waits (bounded by [`HANG_LIMIT`]) until `cond` holds of the tally; panics with the
    /// tally after that.
    pub async fn wait_for(&self, what: &str, mut cond: impl FnMut(&Tally) -> bool) {
        let polled = tokio::time::timeout(HANG_LIMIT, async {
            while !cond(&self.tally) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            polled.is_ok(),
            "timed out after {HANG_LIMIT:?} waiting for {what}; {}",
            self.tally.describe()
        );
    }

    /// Waits for `n` more finished calls.
    pub async fn wait_more(&self, n: u64, what: &str) {
        let target = self.tally.completed() + n;
        self.wait_for(what, |t| t.completed() >= target).await;
    }

    /// Waits (bounded) until every caller has stopped on its own
    /// ([`Until::FirstFailure`]).
    pub async fn wait_all_stopped(&mut self, what: &str) {
        let tasks = &mut self.tasks;
        within(what, async {
            while let Some(joined) = tasks.join_next().await {
                joined.expect("a calling task panicked");
            }
        })
        .await;
    }

    /// Stops the callers, waits (bounded) for the calls they are making, and returns the tally
    /// and how long the load ran.
    pub async fn stop(mut self) -> (Arc<Tally>, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        self.wait_all_stopped("the callers to stop").await;
        (self.tally, self.started.elapsed())
    }
}

/// A call for [`Load::start`]: `Echo` of `fixture` by name, idempotent, with `retries` and the
/// `timeout` for all attempts; a wrong reply or an error is a failure, described with its code
/// and origin.
pub fn idempotent_echo(
    client: &Client,
    retries: u32,
    timeout: Duration,
) -> impl Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync {
    let client = client.clone();
    move |task, i| {
        let client = client.clone();
        Box::pin(async move {
            let text = format!("{task}-{i}");
            let reply = client
                .request(FIXTURE, Echo { text: text.clone() })
                .idempotent()
                .retries(retries)
                .timeout(timeout)
                .await;
            match reply {
                Ok(reply) if reply.text == text => Ok(()),
                Ok(reply) => Err(format!("wrong reply {:?} to {text}", reply.text)),
                Err(e) => Err(format!(
                    "code {:?} origin {:?}: {}",
                    e.code(),
                    e.origin(),
                    e.detail()
                )),
            }
        })
    }
}
