//! Scenario 9: callers hammering a service whose one instance is stuck, colony's bounded
//! mailbox vs ractor's unbounded one.
//!
//! colony: one instance whose handler waits on a gate for the whole run, `mailbox(cap)`. `cap`
//! calls fill it (they wait for the gate); then `callers` tasks call it back to back for the
//! window, pinned to the node (`.at(addr)`: one attempt, so every refusal is counted and none
//! retried), a `yield_now` after each call so the tasks take turns. Every call is refused at
//! once with `Unavailable`. Peer: a bare ractor actor blocked in its handler the same way,
//! receiving `cast`s of a `u64` from as many tasks, paced to colony's measured rate, for the
//! same window (stopped early if the resident set grows by `cap_bytes`). Both report the growth
//! of the process's resident set over the window: its highest reading (sampled every 10 ms and
//! at the end) minus the reading at the start.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::prelude::*;
use colony::ClusterCa;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::certs::BoxError;
use crate::raw_supervisor::spawn_stuck;
use crate::table::{count, rate, times, Table};

use super::idle::rss;
use super::{Section, SupervisionSettings};

const SERVICE: &str = "stuck";

/// A call the handler sits on until the gate closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stuck {
    id: u64,
}

impl Message for Stuck {
    type Reply = ();
    const ENDPOINT: &'static str = "Stuck.Call";
}

struct Blocked {
    gate: Arc<Semaphore>,
}

impl Handler<Stuck> for Blocked {
    async fn handle(&mut self, _: Stuck, _: &Context) -> Result<(), Error> {
        // Never acquired: returns once the gate is closed.
        let _ = self.gate.acquire().await;
        Ok(())
    }
}

/// One system's window.
struct Flood {
    label: String,
    mailbox: String,
    window: Duration,
    refused: u64,
    accepted: u64,
    rss_start: u64,
    rss_end: u64,
    growth: u64,
}

impl Flood {
    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.window.as_secs_f64()
    }
}

/// Samples the resident set every 10 ms until `stop`, keeping the highest reading; sets `stop`
/// itself once the set has grown by `cap` over `start`.
fn watch_rss(start: u64, cap: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = start;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(rss());
            if peak.saturating_sub(start) >= cap {
                stop.store(true, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak.max(rss())
    })
}

/// colony: fill the mailbox, then `callers` tasks call back to back for the window.
async fn colony_flood(s: &SupervisionSettings) -> Result<(Flood, Vec<String>), BoxError> {
    let ca = Arc::new(ClusterCa::generate()?);
    let node = Node::builder()
        .name("mailbox")
        .listen("127.0.0.1:0")
        .ca(ca)
        .start()
        .await?;
    let (client, addr) = (node.client(), node.addr());
    let gate = Arc::new(Semaphore::new(0));
    let factory_gate = gate.clone();
    let service = node
        .service(SERVICE)
        .instances(1)
        .mailbox(s.mailbox)
        .handler::<Stuck>()
        .spawn(move || Blocked {
            gate: factory_gate.clone(),
        })
        .await?;

    // The fillers wait for the gate; a generous deadline, as they wait for the whole window.
    let fillers: Vec<_> = (0..s.mailbox as u64)
        .map(|id| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .request(SERVICE, Stuck { id })
                    .at(addr)
                    .timeout(Duration::from_secs(120))
                    .await
            })
        })
        .collect();
    let filling = Instant::now();
    while service.health().map_or(0, |h| h.queued) < s.mailbox as u64 {
        if filling.elapsed() > Duration::from_secs(10) {
            return Err("the mailbox did not fill within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let rss_start = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_rss(rss_start, u64::MAX, stop.clone());
    let started = Instant::now();
    let end = started + s.window;
    let callers: Vec<_> = (0..s.callers)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let (mut refused, mut accepted) = (0u64, 0u64);
                let mut first_other = None;
                let mut id = (c as u64) << 40;
                while Instant::now() < end {
                    id += 1;
                    let call = client
                        .request(SERVICE, Stuck { id })
                        .at(addr)
                        .timeout(Duration::from_secs(1));
                    match call.await {
                        Err(e) if e.code() == Code::Unavailable => refused += 1,
                        other => {
                            accepted += 1;
                            first_other.get_or_insert_with(|| format!("{other:?}"));
                        }
                    }
                    tokio::task::yield_now().await;
                }
                (refused, accepted, first_other)
            })
        })
        .collect();
    let (mut refused, mut accepted, mut notes) = (0, 0, Vec::new());
    for caller in callers {
        let (r, a, other) = caller.await?;
        refused += r;
        accepted += a;
        if let Some(other) = other {
            notes.push(format!(
                "colony: a hammering call did not get Unavailable: {other}"
            ));
        }
    }
    let window = started.elapsed();
    let rss_end = rss();
    stop.store(true, Ordering::Relaxed);
    let peak = watcher.await?;

    // Let the stuck calls through: the fillers all succeed, no call is lost.
    gate.close();
    let mut filled_ok = 0;
    for filler in fillers {
        if matches!(filler.await, Ok(Ok(()))) {
            filled_ok += 1;
        }
    }
    notes.push(format!(
        "colony: {} of the {} calls that filled the mailbox succeeded once the handler was let go",
        count(filled_ok),
        count(s.mailbox as u64)
    ));
    service.stop().await;
    node.shutdown().await;
    let flood = Flood {
        label: format!("colony, 1 instance, mailbox({})", s.mailbox),
        mailbox: format!("bounded, {} (full)", count(s.mailbox as u64)),
        window,
        refused,
        accepted,
        rss_start,
        rss_end,
        growth: peak.saturating_sub(rss_start),
    };
    Ok((flood, notes))
}

/// ractor: `callers` tasks `cast` to a blocked actor at `rate` in total for the window.
async fn ractor_flood(s: &SupervisionSettings, rate: f64) -> Result<Flood, BoxError> {
    let gate = Arc::new(Semaphore::new(0));
    let (actor, handle) = spawn_stuck(gate.clone()).await?;
    // The first message blocks the handler; the rest queue behind it.
    actor.cast(0)?;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let rss_start = rss();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_rss(rss_start, s.cap_bytes, stop.clone());
    let started = Instant::now();
    let end = started + s.window;
    let per_task = rate / s.callers.max(1) as f64;
    let failed = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..s.callers)
        .map(|_| {
            let (actor, stop, failed) = (actor.clone(), stop.clone(), failed.clone());
            tokio::spawn(async move {
                let mut sent = 0u64;
                loop {
                    let now = Instant::now();
                    if now >= end || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    // Paced: catch up with the schedule, then sleep a timer tick.
                    let due = ((now - started).as_secs_f64() * per_task) as u64;
                    while sent < due {
                        sent += 1;
                        if actor.cast(sent).is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for sender in senders {
        sent += sender.await?;
    }
    let window = started.elapsed();
    let rss_end = rss();
    stop.store(true, Ordering::Relaxed);
    let peak = watcher.await?;
    gate.close();
    actor.kill();
    let _ = handle.await;
    let failed = failed.load(Ordering::Relaxed);
    Ok(Flood {
        label: "raw ractor actor, blocked".into(),
        mailbox: "unbounded".into(),
        window,
        refused: failed,
        accepted: sent - failed,
        rss_start,
        rss_end,
        growth: peak.saturating_sub(rss_start),
    })
}

/// Bytes in MB, or in KB below a megabyte (RSS moves by 4 KB pages).
fn mb(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.0} KB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// Scenario 9: full mailboxes, colony (refuses) vs raw ractor (queues).
pub(crate) async fn full_mailbox(s: &SupervisionSettings) -> Result<Section, BoxError> {
    eprintln!(
        "mailbox: {} callers for {:?}, colony mailbox({})",
        s.callers, s.window, s.mailbox
    );
    let (colony, mut notes) = colony_flood(s).await?;
    let offered = colony.per_s(colony.refused + colony.accepted);
    eprintln!(
        "  colony: {} calls/s refused, RSS {} → +{}",
        rate(colony.per_s(colony.refused)),
        mb(colony.rss_start),
        mb(colony.growth)
    );
    let raw = ractor_flood(s, offered).await?;
    eprintln!(
        "  ractor: {} casts/s accepted over {:?}, RSS {} → +{}",
        rate(raw.per_s(raw.accepted)),
        raw.window,
        mb(raw.rss_start),
        mb(raw.growth)
    );
    if raw.window + Duration::from_millis(50) < s.window {
        notes.push(format!(
            "raw ractor: stopped after {:.2} s, its resident set having grown by {}",
            raw.window.as_secs_f64(),
            mb(s.cap_bytes)
        ));
    }
    let mut table = Table::new(&[
        "system",
        "mailbox",
        "window",
        "refused / s",
        "accepted / s",
        "RSS at start",
        "RSS at end",
        "growth (peak)",
        "growth / accepted msg",
        "growth ÷ raw ractor",
    ]);
    for flood in [&colony, &raw] {
        table.row(vec![
            flood.label.clone(),
            flood.mailbox.clone(),
            format!("{:.2} s", flood.window.as_secs_f64()),
            rate(flood.per_s(flood.refused)),
            rate(flood.per_s(flood.accepted)),
            mb(flood.rss_start),
            mb(flood.rss_end),
            mb(flood.growth),
            if flood.accepted > 0 {
                format!("{:.0} B", flood.growth as f64 / flood.accepted as f64)
            } else {
                "n/a".into()
            },
            times(flood.growth as f64 / raw.growth.max(1) as f64),
        ]);
    }
    Ok(Section {
        title: "9. Full mailboxes: colony vs raw ractor".into(),
        about: format!(
            "{} tasks call a service whose one instance is stuck in its handler. colony: \
             `mailbox({})`, already full, every call `.at(addr)` (one attempt) refused with \
             `Unavailable`. Raw: a ractor actor stuck the same way receives `cast`s (a `u64`) \
             from as many tasks, paced to colony's call rate ({}/s). RSS growth = highest \
             reading during the window (every 10 ms) − reading at its start.",
            s.callers,
            s.mailbox,
            rate(offered)
        ),
        table,
        notes,
        goals: Vec::new(),
    })
}
