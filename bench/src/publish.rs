//! Publishing ticks: flat out (throughput) or at a fixed rate (latency), for any system.
//!
//! Throughput runs saturate: `tasks` spawned tasks publish one tick after the other for the
//! window, then the publisher is flushed. Latency is not taken from those runs (a saturated
//! publisher measures its own queue, not the system): [`pace`] publishes at a fixed rate from
//! one task, `rate / 1000` ticks each millisecond (tokio's timer granularity), each stamped
//! when handed to the publisher.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::tick::{now_ns, Tick};

/// A task stops publishing after this many failures in a row.
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

/// One system's publisher, shared by the publishing tasks.
pub(crate) trait Publisher: Send + Sync + 'static {
    /// Publishes one tick.
    fn publish(&self, tick: Tick) -> impl Future<Output = Result<(), String>> + Send;
    /// Returns once everything published so far has left this process.
    fn flush(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// What a publishing run did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// Ticks published without error.
    pub(crate) published: u64,
    /// Failed publishes (and a failed flush).
    pub(crate) errors: u64,
    /// The first failure, to show why.
    pub(crate) first_error: Option<String>,
    /// When publishing started, UNIX ns.
    pub(crate) start_ns: u64,
    /// From the first publish to the end of the flush.
    pub(crate) elapsed: Duration,
}

impl Outcome {
    fn fail(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn merge(&mut self, other: Outcome) {
        self.published += other.published;
        self.errors += other.errors;
        if let Some(e) = other.first_error {
            self.first_error.get_or_insert(e);
        }
    }
}

/// A tick of run `run` numbered `seq`, stamped now.
pub(crate) fn tick(run: u32, seq: u64, payload: &[u8]) -> Tick {
    Tick {
        run,
        probe: false,
        seq,
        sent_ns: now_ns(),
        payload: payload.to_vec(),
    }
}

/// Publishes run `run` flat out from `tasks` tasks for `window`, then flushes.
pub(crate) async fn saturate<P: Publisher>(
    publisher: &Arc<P>,
    tasks: usize,
    run: u32,
    payload: &[u8],
    window: Duration,
) -> Outcome {
    let next_seq = Arc::new(AtomicU64::new(0));
    let start_ns = now_ns();
    let start = Instant::now();
    let end = start + window;
    let handles: Vec<_> = (0..tasks.max(1))
        .map(|_| {
            let publisher = publisher.clone();
            let next_seq = next_seq.clone();
            let payload = payload.to_vec();
            tokio::spawn(async move {
                let mut out = Outcome::default();
                let mut failures_in_a_row = 0;
                while Instant::now() < end {
                    let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                    match publisher.publish(tick(run, seq, &payload)).await {
                        Ok(()) => {
                            out.published += 1;
                            failures_in_a_row = 0;
                        }
                        Err(e) => {
                            out.fail(e);
                            failures_in_a_row += 1;
                            if failures_in_a_row >= MAX_CONSECUTIVE_ERRORS {
                                break;
                            }
                        }
                    }
                }
                out
            })
        })
        .collect();
    let mut total = Outcome {
        start_ns,
        ..Outcome::default()
    };
    for handle in handles {
        match handle.await {
            Ok(out) => total.merge(out),
            Err(e) => total.fail(format!("publishing task failed: {e}")),
        }
    }
    if let Err(e) = publisher.flush().await {
        total.fail(e);
    }
    total.elapsed = start.elapsed();
    total
}

/// Publishes run `run` at `rate` ticks per second for `window` from one task, then flushes.
pub(crate) async fn pace<P: Publisher>(
    publisher: &Arc<P>,
    rate: u64,
    run: u32,
    payload: &[u8],
    window: Duration,
) -> Outcome {
    let publisher = publisher.clone();
    let payload = payload.to_vec();
    let task = tokio::spawn(async move {
        let mut out = Outcome {
            start_ns: now_ns(),
            ..Outcome::default()
        };
        let start = Instant::now();
        let mut every_ms = tokio::time::interval(Duration::from_millis(1));
        every_ms.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut seq = 0u64;
        loop {
            every_ms.tick().await;
            let elapsed = start.elapsed().min(window);
            let due = (elapsed.as_secs_f64() * rate as f64) as u64;
            while seq < due {
                match publisher.publish(tick(run, seq, &payload)).await {
                    Ok(()) => out.published += 1,
                    Err(e) => out.fail(e),
                }
                seq += 1;
            }
            if elapsed >= window {
                break;
            }
        }
        if let Err(e) = publisher.flush().await {
            out.fail(e);
        }
        out.elapsed = start.elapsed();
        out
    });
    task.await.unwrap_or_else(|e| {
        let mut out = Outcome::default();
        out.fail(format!("publishing task failed: {e}"));
        out
    })
}

/// Publishes one probe (run 0, never counted) and flushes.
pub(crate) async fn probe<P: Publisher>(publisher: &P, seq: u64) -> Result<(), String> {
    let mut t = tick(0, seq, b"probe");
    t.probe = true;
    publisher.publish(t).await?;
    publisher.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Tick>>);
    impl Publisher for Recorder {
        async fn publish(&self, tick: Tick) -> Result<(), String> {
            self.0.lock().unwrap().push(tick);
            Ok(())
        }
        async fn flush(&self) -> Result<(), String> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paced_publishing_sends_the_rate_numbered_in_order() {
        let p = Arc::new(Recorder::default());
        let out = pace(&p, 10_000, 3, &[1; 100], Duration::from_millis(200)).await;
        assert_eq!(out.published, 2_000);
        let ticks = p.0.lock().unwrap();
        assert!(ticks
            .iter()
            .enumerate()
            .all(|(i, t)| t.seq == i as u64 && t.run == 3 && !t.probe && t.payload.len() == 100));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn saturated_publishing_numbers_every_tick_once() {
        let p = Arc::new(Recorder::default());
        let out = saturate(&p, 3, 1, b"x", Duration::from_millis(20)).await;
        let ticks = p.0.lock().unwrap();
        assert_eq!(out.published as usize, ticks.len());
        let mut seqs: Vec<u64> = ticks.iter().map(|t| t.seq).collect();
        seqs.sort_unstable();
        assert!(seqs.iter().enumerate().all(|(i, &s)| s == i as u64));
    }
}
