//! The scenarios, each measured against its peers in the same run.
//!
//! Every cell (one concurrency, one payload) is measured `rounds` times per contender, the
//! contenders taking turns A B C, C B A, A B C... Figures are medians across rounds; a ratio
//! against the peer is the median of the ratios of runs made in the same round.

use std::future::Future;
use std::time::Duration;

use crate::certs::BoxError;
use crate::load::Plan;
use crate::netstat;
use crate::stats::{round_order, Summary};
use crate::table::{rate, time_us, Goal, Table};

/// How every cell is run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Calls before the clock starts, per cell and round.
    pub(crate) warmup: Duration,
    /// Measured window per cell and round.
    pub(crate) duration: Duration,
    /// Runs of each cell per contender.
    pub(crate) rounds: usize,
    /// Instances of colony's echo service in the server process; with several values, one
    /// colony server per value runs in scenario 1 (the first is the one the goals use).
    pub(crate) instances: Vec<usize>,
    /// Concurrency levels of the unary RPC scenario.
    pub(crate) concurrency: Vec<usize>,
    /// Payload of the unary RPC, sequential and local scenarios, bytes.
    pub(crate) payload: usize,
    /// Payloads of the sweep, bytes.
    pub(crate) sweep_sizes: Vec<usize>,
    /// Concurrency of the sweep.
    pub(crate) sweep_concurrency: usize,
    /// Run only the systems whose label contains this text (for profiling one side).
    pub(crate) only: Option<String>,
    /// Strategies of the extra colony clients that call by name in the unary RPC scenario.
    pub(crate) by_name: Vec<colony::Strategy>,
    /// Concurrency of the resilience scenario.
    pub(crate) fleet_concurrency: usize,
    /// Faults of the resilience scenario, one cell each.
    pub(crate) faults: Vec<crate::fault::Fault>,
}

impl Settings {
    fn plan(&self, concurrency: usize) -> Plan {
        Plan {
            concurrency,
            warmup: self.warmup,
            duration: self.duration,
        }
    }
}

/// How the supervision scenarios (8 and 9) run.
#[derive(Debug, Clone)]
pub(crate) struct SupervisionSettings {
    /// Panics per system in the restart scenario.
    pub(crate) panics: usize,
    /// Panics under colony's default restart policy (each on a fresh service).
    pub(crate) default_panics: usize,
    /// Blocks the restart samples are taken in, systems alternating.
    pub(crate) rounds: usize,
    /// Measured window of the full-mailbox scenario.
    pub(crate) window: Duration,
    /// Tasks calling the stuck service.
    pub(crate) callers: usize,
    /// colony's mailbox capacity for the stuck instance.
    pub(crate) mailbox: usize,
    /// The raw ractor flood stops once the resident set has grown by this much.
    pub(crate) cap_bytes: u64,
}

/// One scenario's output: a titled table, notes, and the goals it measures.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// Heading.
    pub(crate) title: String,
    /// What is measured, one paragraph.
    pub(crate) about: String,
    /// The figures.
    pub(crate) table: Table,
    /// Remarks (failed calls...).
    pub(crate) notes: Vec<String>,
    /// Goals this scenario decides.
    pub(crate) goals: Vec<Goal>,
}

impl Section {
    /// The section as markdown.
    pub(crate) fn to_markdown(&self) -> String {
        let mut out = format!(
            "## {}\n\n{}\n\n{}",
            self.title,
            self.about,
            self.table.to_markdown()
        );
        for note in &self.notes {
            out.push_str(&format!("\n- {note}"));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// A system measured in a scenario.
trait Contender: Sync {
    /// Its name in the tables.
    fn label(&self) -> &str;
    /// One run of `plan` with `payload`-byte bodies.
    fn run(&self, plan: Plan, payload: usize) -> impl Future<Output = Summary> + Send;
}

/// Runs one cell: every contender `rounds` times, alternating. Returns `[contender][round]`.
///
/// UDP datagrams the kernel dropped during a contender's runs are reported in `notes`.
async fn alternate<C: Contender>(
    what: &str,
    contenders: &[&C],
    settings: &Settings,
    plan: Plan,
    payload: usize,
    notes: &mut Vec<String>,
) -> Vec<Vec<Summary>> {
    let mut runs = vec![Vec::new(); contenders.len()];
    let mut drops = vec![0u64; contenders.len()];
    for round in 0..settings.rounds {
        for i in round_order(round, contenders.len()) {
            if let Some(only) = &settings.only {
                if !contenders[i].label().contains(only.as_str()) {
                    continue;
                }
            }
            let before = netstat::udp_rcvbuf_errors();
            let summary = contenders[i].run(plan, payload).await;
            drops[i] += netstat::dropped(before, netstat::udp_rcvbuf_errors());
            eprintln!(
                "  {what} round {}/{} {:<26} {:>10} req/s  p50 {:>9}  p99 {:>9}{}",
                round + 1,
                settings.rounds,
                contenders[i].label(),
                rate(summary.throughput),
                time_us(summary.p50_us),
                time_us(summary.p99_us),
                if summary.errors > 0 {
                    format!("  ({} errors)", summary.errors)
                } else {
                    String::new()
                },
            );
            runs[i].push(summary);
        }
    }
    for (contender, dropped) in contenders.iter().zip(drops) {
        if dropped > 0 {
            notes.push(format!(
                "{} ({what}): the kernel dropped {dropped} UDP datagrams (socket receive buffer \
                 full) during its runs (system-wide counter)",
                contender.label()
            ));
        }
    }
    runs
}

fn field(runs: &[Summary], f: fn(&Summary) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

fn error_notes(notes: &mut Vec<String>, cell: &str, label: &str, runs: &[Summary]) {
    let errors: u64 = runs.iter().map(|s| s.errors).sum();
    if errors > 0 {
        notes.push(format!("{label} ({cell}): {errors} failed calls"));
    }
}

fn body(payload: usize) -> String {
    "x".repeat(payload)
}

// ---------------------------------------------------------------------------------------------
// Scenarios 1 and 2: two processes.

/// A run that could not even start: no calls, one error.
fn failed(label: &str, e: BoxError) -> Summary {
    eprintln!("  {label}: set-up failed: {e}");
    let mut sample = crate::stats::Sample::default();
    sample.fail(|| e.to_string());
    sample.summarise(Duration::from_secs(1), 0)
}

mod idle;
mod in_process;
mod locks;
mod mailbox;
mod pubsub;
mod remote;
mod resilience;
mod restart;
mod round_trip;

pub(crate) use idle::idle;
pub(crate) use in_process::local;
pub(crate) use locks::{locks, LockArgs, LockSettings};
pub(crate) use mailbox::full_mailbox;
pub(crate) use pubsub::{pubsub, PubSubSettings};
pub(crate) use remote::{rpc, sweep, RemoteEnv};
pub(crate) use resilience::resilience;
pub(crate) use restart::restart;
pub(crate) use round_trip::sequential;
