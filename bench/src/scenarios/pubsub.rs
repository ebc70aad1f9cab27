//! Scenario 10: publish/subscribe, colony's broker (at-most-once and at-least-once) side by side
//! with NATS core, in the same run.
//!
//! The publisher runs in the bench process, every subscriber in a child process of its own
//! (`sub_child.rs`). Three shapes: 1 publisher → 1 subscriber, fan-out to N subscribers (each
//! gets every tick) and a queue group of N (each tick once in the group). A throughput run
//! publishes flat out for the window, then waits until the subscribers have every tick (or
//! nothing more arrives for [`IDLE`]); its rate is the unique ticks delivered divided by the
//! time from the first publish to the last delivery, so a backlog drained after the publisher
//! stops counts against the system. Latency is measured apart, 1→1, with the publisher paced
//! at a fixed rate (see `publish.rs`).

use std::sync::Arc;
use std::time::Duration;

use colony::{ClusterCa, Node};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::broker_side::ColonyPublisher;
use crate::certs::BoxError;
use crate::child::WorkDir;
use crate::colony_side;
use crate::nats_side::{self, NatsPublisher, NatsServer};
use crate::netstat;
use crate::publish::{self, Outcome};
use crate::stats::{median, new_histogram, paired_ratio, round_order};
use crate::sub_child::{SubChild, SubKind, SubscribeArgs};
use crate::table::{count, rate, time_us, times, Table};
use crate::tally::Report;
use crate::tick::Mode;

use super::Section;

/// A run is over when no new delivery has arrived for this long (some ticks were lost).
const IDLE: Duration = Duration::from_secs(2);

/// A run is over after this long in any case.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// How often the subscribers are asked for their counts while a run drains.
const POLL: Duration = Duration::from_millis(20);

/// How long subscriptions may take to reach the publisher (gossip).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the pub/sub scenario runs.
#[derive(Debug, Clone)]
pub(crate) struct PubSubSettings {
    /// Publishing before each measured run (a run of its own, not counted).
    pub(crate) warmup: Duration,
    /// Publishing window of each measured run.
    pub(crate) duration: Duration,
    /// Runs of each cell per system, systems alternating.
    pub(crate) rounds: usize,
    /// Payload of each tick, bytes.
    pub(crate) payload: usize,
    /// Subscribers of the fan-out and queue-group shapes.
    pub(crate) subscribers: usize,
    /// Ticks per second of the latency runs.
    pub(crate) rate: u64,
    /// colony's publishing tasks in throughput runs.
    pub(crate) colony_publishers: usize,
    /// NATS publishing tasks in throughput runs.
    pub(crate) nats_publishers: usize,
    /// Run only the systems whose label contains this text.
    pub(crate) only: Option<String>,
}

/// Who receives what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One subscriber.
    One,
    /// N subscribers, each gets every tick.
    FanOut,
    /// N subscribers in one queue group: each tick once.
    Queue,
}

impl Shape {
    fn tag(self) -> &'static str {
        match self {
            Shape::One => "one",
            Shape::FanOut => "fan",
            Shape::Queue => "queue",
        }
    }

    fn subscribers(self, s: &PubSubSettings) -> usize {
        match self {
            Shape::One => 1,
            Shape::FanOut | Shape::Queue => s.subscribers.max(1),
        }
    }

    /// Deliveries a publish should make.
    fn copies(self, s: &PubSubSettings) -> u64 {
        match self {
            Shape::FanOut => self.subscribers(s) as u64,
            Shape::One | Shape::Queue => 1,
        }
    }

    fn label(self, s: &PubSubSettings) -> String {
        let n = self.subscribers(s);
        match self {
            Shape::One => "1→1, msgs/s delivered".into(),
            Shape::FanOut => format!("fan-out {n}, deliveries/s"),
            Shape::Queue => format!("queue group {n}, msgs/s"),
        }
    }

    fn short(self, s: &PubSubSettings) -> String {
        let n = self.subscribers(s);
        match self {
            Shape::One => "1→1".into(),
            Shape::FanOut => format!("fan-out {n}"),
            Shape::Queue => format!("queue group {n}"),
        }
    }

    fn queue(self) -> Option<String> {
        (self == Shape::Queue).then(|| "workers".to_string())
    }
}

/// A publisher of either system.
#[derive(Clone)]
enum AnyPublisher {
    Colony(Arc<ColonyPublisher>),
    Nats(Arc<NatsPublisher>),
}

/// How a run publishes.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Flat out from this many tasks.
    Saturate(usize),
    /// This many ticks per second, from one task.
    Rate(u64),
}

impl AnyPublisher {
    async fn run(&self, pace: Pace, run: u32, payload: &[u8], window: Duration) -> Outcome {
        match (self, pace) {
            (AnyPublisher::Colony(p), Pace::Saturate(n)) => {
                publish::saturate(p, n, run, payload, window).await
            }
            (AnyPublisher::Colony(p), Pace::Rate(r)) => {
                publish::pace(p, r, run, payload, window).await
            }
            (AnyPublisher::Nats(p), Pace::Saturate(n)) => {
                publish::saturate(p, n, run, payload, window).await
            }
            (AnyPublisher::Nats(p), Pace::Rate(r)) => {
                publish::pace(p, r, run, payload, window).await
            }
        }
    }

    async fn probe(&self, seq: u64) -> Result<(), String> {
        match self {
            AnyPublisher::Colony(p) => publish::probe(p.as_ref(), seq).await,
            AnyPublisher::Nats(p) => publish::probe(p.as_ref(), seq).await,
        }
    }
}

/// One measured run of one system.
#[derive(Debug, Clone)]
struct RunResult {
    outcome: Outcome,
    /// Deliveries that should have happened.
    expected: u64,
    /// Deliveries of distinct ticks (per subscriber).
    unique: u64,
    duplicates: u64,
    /// Unique deliveries per second, first publish to last delivery.
    delivered_per_s: f64,
    latency: Histogram<u64>,
    /// UDP datagrams the kernel dropped meanwhile (system-wide).
    udp_drops: u64,
}

impl RunResult {
    fn published_per_s(&self) -> f64 {
        self.outcome.published as f64 / self.outcome.elapsed.as_secs_f64().max(1e-9)
    }

    fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.unique)
    }

    fn latency_us(&self, q: f64) -> f64 {
        if self.latency.is_empty() {
            f64::NAN
        } else {
            self.latency.value_at_quantile(q) as f64 / 1_000.0
        }
    }
}

/// The publishing side, for the whole scenario.
struct Bench {
    dir: WorkDir,
    node: Node,
    nats: Option<(NatsServer, async_nats::Client)>,
    next_run: u32,
}

/// One shape's subscribers and publishers, per system.
struct Stage {
    shape: Shape,
    /// For each mode: its publisher and its subscriber children (colony's two modes share
    /// their children), or why it is not measured.
    systems: Vec<(Mode, Result<AnyPublisher, String>)>,
    colony: Vec<SubChild>,
    nats: Vec<SubChild>,
}

impl Stage {
    fn children(&mut self, mode: Mode) -> &mut [SubChild] {
        match mode {
            Mode::AtMostOnce | Mode::AtLeastOnce => &mut self.colony,
            Mode::Nats => &mut self.nats,
        }
    }

    async fn stop(self) {
        for child in self.colony.into_iter().chain(self.nats) {
            child.stop().await;
        }
    }
}

impl Bench {
    async fn start(notes: &mut Vec<String>) -> Result<Self, BoxError> {
        let dir = WorkDir::create()?;
        let ca = Arc::new(ClusterCa::generate()?);
        std::fs::write(dir.path().join(colony_quic::CA_FILE), ca.to_pem())?;
        let node = colony_side::start_client("bench-pub", &ca).await?;
        let nats = match NatsServer::start().await? {
            Some(server) => {
                eprintln!("started nats-server at {}", server.addr());
                let client = nats_side::connect(server.addr(), "bench-pub").await?;
                Some((server, client))
            }
            None => {
                notes.push(format!(
                    "`{}` was not found on PATH: the NATS column is not measured \
                     (`apt-get install nats-server`).",
                    nats_side::BINARY
                ));
                None
            }
        };
        Ok(Self {
            dir,
            node,
            nats,
            next_run: 1,
        })
    }

    /// Starts `shape`'s subscriber children and waits until each system's publisher reaches
    /// all of them. A system that cannot start is kept with the reason, and not measured.
    async fn stage(&mut self, shape: Shape, settings: &PubSubSettings) -> Stage {
        let wanted = |mode: Mode| {
            settings
                .only
                .as_ref()
                .is_none_or(|only| mode.label().contains(only.as_str()))
        };
        let mut stage = Stage {
            shape,
            systems: Vec::new(),
            colony: Vec::new(),
            nats: Vec::new(),
        };
        let colony = if wanted(Mode::AtMostOnce) || wanted(Mode::AtLeastOnce) {
            let started = self
                .children(SubKind::Colony, self.node.addr(), shape, settings)
                .await;
            started.map(|children| stage.colony = children)
        } else {
            Err("not selected (--only)".to_string())
        };
        let nats = match &self.nats {
            Some((server, client)) if wanted(Mode::Nats) => {
                let started = self
                    .children(SubKind::Nats, server.addr(), shape, settings)
                    .await;
                started.map(|children| {
                    stage.nats = children;
                    client.clone()
                })
            }
            Some(_) => Err("not selected (--only)".to_string()),
            None => Err(format!("{} not installed", nats_side::BINARY)),
        };
        for mode in Mode::ALL {
            let subject = mode.subject(shape.tag());
            let publisher = match (mode, &colony, &nats) {
                (Mode::Nats, _, Ok(client)) => Ok(AnyPublisher::Nats(Arc::new(
                    NatsPublisher::new(client.clone(), &subject),
                ))),
                (Mode::Nats, _, Err(e)) | (_, Err(e), _) => Err(e.clone()),
                (_, Ok(()), _) if !wanted(mode) => Err("not selected (--only)".to_string()),
                (_, Ok(()), _) => Ok(AnyPublisher::Colony(Arc::new(ColonyPublisher::new(
                    self.node.client(),
                    subject,
                )))),
            };
            let publisher = match publisher {
                Ok(p) => reach(&p, stage.children(mode))
                    .await
                    .map(|()| p)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            if let Err(e) = &publisher {
                eprintln!("  {} ({}): not measured: {e}", mode.label(), shape.tag());
            }
            stage.systems.push((mode, publisher));
        }
        stage
    }

    /// Starts `shape`'s subscriber children of `kind`, subscribing through `at`.
    async fn children(
        &self,
        kind: SubKind,
        at: std::net::SocketAddr,
        shape: Shape,
        settings: &PubSubSettings,
    ) -> Result<Vec<SubChild>, String> {
        let mut children = Vec::new();
        for i in 0..shape.subscribers(settings) {
            let prefix = match kind {
                SubKind::Colony => "sub",
                SubKind::Nats => "nats",
            };
            let args = SubscribeArgs {
                kind,
                at,
                dir: self.dir.path().to_path_buf(),
                name: format!("{prefix}-{}-{i}", shape.tag()),
                scenario: shape.tag().into(),
                queue: shape.queue(),
            };
            // On failure the children started so far are dropped, which kills them.
            children.push(SubChild::start(&args).await.map_err(|e| e.to_string())?);
        }
        Ok(children)
    }

    /// One run of `mode` in `stage`: a warm-up run, then the measured one.
    async fn measure(
        &mut self,
        stage: &mut Stage,
        mode: Mode,
        pace: Pace,
        settings: &PubSubSettings,
    ) -> Result<RunResult, BoxError> {
        let publisher = match &stage.systems.iter().find(|(m, _)| *m == mode) {
            Some((_, Ok(p))) => p.clone(),
            _ => return Err("not measured".into()),
        };
        let payload = vec![b'x'; settings.payload];
        let copies = stage.shape.copies(settings);
        let mut result = None;
        for window in [settings.warmup, settings.duration] {
            let run = self.next_run;
            self.next_run += 1;
            let children = stage.children(mode);
            for child in children.iter_mut() {
                child.start_run(run).await?;
            }
            let before = netstat::udp_rcvbuf_errors();
            let outcome = publisher.run(pace, run, &payload, window).await;
            let expected = outcome.published * copies;
            let reports = collect(children, expected).await?;
            let udp_drops = netstat::dropped(before, netstat::udp_rcvbuf_errors());
            result = Some(summarise(outcome, expected, &reports, udp_drops));
        }
        result.ok_or_else(|| "no run".into())
    }
}

/// Publishes probes until every child has received one (subscriptions gossiped, connections
/// up).
async fn reach(publisher: &AnyPublisher, children: &mut [SubChild]) -> Result<(), BoxError> {
    let mut before = Vec::new();
    for child in children.iter_mut() {
        before.push(child.report().await?.probes);
    }
    let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
    let mut seq = 0;
    loop {
        publisher.probe(seq).await?;
        seq += 1;
        tokio::time::sleep(POLL).await;
        let mut reached = 0;
        for (child, &b) in children.iter_mut().zip(&before) {
            if child.report().await?.probes > b {
                reached += 1;
            }
        }
        if reached == children.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{reached} of {} subscribers reached within {SUBSCRIBE_TIMEOUT:?}",
                children.len()
            )
            .into());
        }
    }
}

/// Waits until the children have `expected` unique deliveries, or none arrived for [`IDLE`].
async fn collect(children: &mut [SubChild], expected: u64) -> Result<Vec<Report>, BoxError> {
    let deadline = Instant::now() + RUN_DEADLINE;
    let mut last_total = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        let mut reports = Vec::new();
        for child in children.iter_mut() {
            reports.push(child.report().await?);
        }
        let unique: u64 = reports.iter().map(|r| r.received - r.duplicates).sum();
        let total: u64 = reports.iter().map(|r| r.received).sum();
        let now = Instant::now();
        if total != last_total {
            last_total = total;
            last_change = now;
        }
        if unique >= expected || now - last_change >= IDLE || now >= deadline {
            return Ok(reports);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn summarise(outcome: Outcome, expected: u64, reports: &[Report], udp_drops: u64) -> RunResult {
    let unique: u64 = reports.iter().map(|r| r.received - r.duplicates).sum();
    let duplicates = reports.iter().map(|r| r.duplicates).sum();
    let last = reports.iter().map(|r| r.last_ns).max().unwrap_or(0);
    let span = last.saturating_sub(outcome.start_ns) as f64 / 1e9;
    let mut latency = new_histogram();
    for r in reports {
        let _ = latency.add(&r.latency);
    }
    RunResult {
        delivered_per_s: if span > 0.0 {
            unique as f64 / span
        } else {
            0.0
        },
        outcome,
        expected,
        unique,
        duplicates,
        latency,
        udp_drops,
    }
}

/// Every run of one cell: `[mode index][round]`, failed runs left out.
type Cell = Vec<Vec<RunResult>>;

async fn cell(
    bench: &mut Bench,
    stage: &mut Stage,
    pace: Pace,
    settings: &PubSubSettings,
    what: &str,
    notes: &mut Vec<String>,
) -> Cell {
    let mut runs: Cell = vec![Vec::new(); Mode::ALL.len()];
    for round in 0..settings.rounds {
        for i in round_order(round, Mode::ALL.len()) {
            let mode = Mode::ALL[i];
            if !matches!(
                stage.systems.iter().find(|(m, _)| *m == mode),
                Some((_, Ok(_)))
            ) {
                continue;
            }
            let pace = match (pace, mode) {
                (Pace::Saturate(_), Mode::Nats) => Pace::Saturate(settings.nats_publishers),
                (Pace::Saturate(_), _) => Pace::Saturate(settings.colony_publishers),
                (p, _) => p,
            };
            match bench.measure(stage, mode, pace, settings).await {
                Ok(r) => {
                    eprintln!(
                        "  {what} round {}/{} {:<21} published {:>10}/s delivered {:>10}/s \
                         p50 {:>9} p99 {:>9}  lost {} dup {}{}",
                        round + 1,
                        settings.rounds,
                        mode.label(),
                        rate(r.published_per_s()),
                        rate(r.delivered_per_s),
                        time_us(r.latency_us(0.5)),
                        time_us(r.latency_us(0.99)),
                        r.lost(),
                        r.duplicates,
                        r.outcome
                            .first_error
                            .as_ref()
                            .map(|e| format!("  ({} errors: {e})", r.outcome.errors))
                            .unwrap_or_default(),
                    );
                    runs[i].push(r);
                }
                Err(e) => {
                    eprintln!("  {what} {}: run failed: {e}", mode.label());
                    notes.push(format!("{} ({what}): a run failed: {e}", mode.label()));
                }
            }
        }
    }
    runs
}

/// The pub/sub scenario: its summary and its delivery detail.
pub(crate) async fn pubsub(settings: &PubSubSettings) -> Result<Vec<Section>, BoxError> {
    let mut notes = Vec::new();
    let mut bench = Bench::start(&mut notes).await?;
    let mut summary = Table::new(&[
        "scenario",
        Mode::AtMostOnce.label(),
        Mode::AtLeastOnce.label(),
        Mode::Nats.label(),
        "ratio colony/NATS (at-most-once)",
        "ratio colony/NATS (at-least-once)",
    ]);
    let mut detail = Table::new(&[
        "scenario",
        "system",
        "published/s",
        "delivered/s",
        "delivered",
        "lost",
        "duplicates",
        "publish errors",
        "UDP drops",
    ]);
    let mut not_measured = Vec::new();
    for shape in [Shape::One, Shape::FanOut, Shape::Queue] {
        eprintln!("pubsub: {}", shape.short(settings));
        let mut stage = bench.stage(shape, settings).await;
        for (mode, publisher) in &stage.systems {
            if let Err(e) = publisher {
                not_measured.push(format!("{} ({}): {e}", mode.label(), shape.short(settings)));
            }
        }
        let mut cells = Vec::new();
        if shape == Shape::One {
            let what = format!("1→1 paced {}/s", count(settings.rate));
            let runs = cell(
                &mut bench,
                &mut stage,
                Pace::Rate(settings.rate),
                settings,
                &what,
                &mut notes,
            )
            .await;
            cells.push((what, runs));
        }
        let what = shape.short(settings);
        let runs = cell(
            &mut bench,
            &mut stage,
            Pace::Saturate(1),
            settings,
            &what,
            &mut notes,
        )
        .await;
        stage.stop().await;
        let column = |f: fn(&RunResult) -> f64| -> Vec<Vec<f64>> {
            runs.iter().map(|r| r.iter().map(f).collect()).collect()
        };
        let rates = column(|r| r.delivered_per_s);
        let mut row = vec![shape.label(settings)];
        row.extend(rates.iter().map(|v| rate(median(v))));
        row.push(times(paired_ratio(&rates[0], &rates[2])));
        row.push(times(paired_ratio(&rates[1], &rates[2])));
        summary.row(row);
        cells.push((what, runs));
        for (what, runs) in &cells {
            for (i, mode) in Mode::ALL.iter().enumerate() {
                if runs[i].is_empty() {
                    continue;
                }
                let r = &runs[i];
                let sum = |f: fn(&RunResult) -> u64| r.iter().map(f).sum::<u64>();
                let expected = sum(|r| r.expected);
                let lost = sum(|r| r.lost());
                detail.row(vec![
                    what.clone(),
                    mode.label().into(),
                    rate(median(
                        &r.iter().map(|r| r.published_per_s()).collect::<Vec<_>>(),
                    )),
                    rate(median(
                        &r.iter().map(|r| r.delivered_per_s).collect::<Vec<_>>(),
                    )),
                    count(sum(|r| r.unique)),
                    if lost > 0 {
                        format!(
                            "{} ({:.2} %)",
                            count(lost),
                            100.0 * lost as f64 / expected.max(1) as f64
                        )
                    } else {
                        "0".into()
                    },
                    count(sum(|r| r.duplicates)),
                    count(sum(|r| r.outcome.errors)),
                    count(sum(|r| r.udp_drops)),
                ]);
            }
        }
        if shape == Shape::One {
            let runs = &cells[0].1;
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                let lat: Vec<Vec<f64>> = runs
                    .iter()
                    .map(|r| r.iter().map(|r| r.latency_us(q)).collect())
                    .collect();
                let mut row = vec![format!(
                    "1→1 latency {name} at {} msgs/s",
                    count(settings.rate)
                )];
                row.extend(lat.iter().map(|v| time_us(median(v))));
                row.push(times(paired_ratio(&lat[0], &lat[2])));
                row.push(times(paired_ratio(&lat[1], &lat[2])));
                summary.row(row);
            }
        }
    }
    bench.node.shutdown().await;
    drop(bench.nats);
    notes.extend(not_measured);
    Ok(vec![
        Section {
            title: "10. Publish/subscribe, colony's broker vs NATS core".into(),
            about: about(settings),
            table: summary,
            notes,
            goals: Vec::new(),
        },
        Section {
            title: "10b. Publish/subscribe: delivery detail".into(),
            about: "Per cell and system: medians over rounds of the publish rate (ticks \
                    accepted by the publisher ÷ time to the end of its flush) and of the \
                    delivery rate; counts summed over rounds. `lost` = deliveries expected \
                    minus distinct ticks delivered (per subscriber); `duplicates` = a tick \
                    delivered again to the same subscriber. UDP drops: the kernel's \
                    system-wide counter of datagrams dropped for a full socket buffer (QUIC)."
                .into(),
            table: detail,
            notes: Vec::new(),
            goals: Vec::new(),
        },
    ])
}

fn about(s: &PubSubSettings) -> String {
    format!(
        "One publisher in the bench process; each subscriber is a process of its own, on \
         127.0.0.1 (nats-server is one more process). Events of {} bytes of payload plus a \
         21-byte header (run, probe flag, sequence number, send time); colony sends them \
         serialized, NATS packed by hand. colony subscribers use the defaults (buffer, \
         overflow); at-least-once acknowledges each event when the handler returns. NATS: \
         nats-server with its defaults, async-nats clients with theirs. Throughput: the \
         publisher publishes flat out for {:?} (after a {:?} warm-up run) from {} task(s) for \
         colony (`client.publish(..).await` in a loop) and {} for NATS (`client.publish` in a \
         loop, then `flush`); the rate is distinct ticks delivered ÷ (last delivery − first \
         publish), so a backlog still draining when the publisher stops is counted. \
         Latency: 1→1, a separate run paced at {} msgs/s ({} per ms from one task), publish \
         call to handler entry, wall clock of the same machine. {} round(s), systems \
         alternating; figures are medians over rounds, ratios medians of same-round ratios \
         (>1 is better for colony in rate rows, <1 in latency rows).",
        s.payload,
        s.duration,
        s.warmup,
        s.colony_publishers,
        s.nats_publishers,
        count(s.rate),
        s.rate / 1000,
        s.rounds,
    )
}
