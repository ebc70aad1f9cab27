//! Scenario 11: distributed locks, colony's lock service side by side with etcd's, in the same
//! run.
//!
//! colony: three server node processes and the bench's client-only node (`lock_side.rs`).
//! etcd: a single `etcd` member the bench starts, driven through etcd-client's lock API in
//! two ways, a session lease per client and a lease per acquisition (`etcd_side.rs`, built
//! with the `etcd` feature only). Two cells: uncontended (1 client, 1 key, a fixed number of
//! acquire+release pairs one after the other) and contended (N clients on K keys for a fixed
//! window). Pairs hold nothing: a pair's time is the lock service's cost (and, contended, the
//! wait for the key).

use std::path::PathBuf;
use std::time::Duration;

use crate::certs::BoxError;
use crate::lock_side;
use crate::stats::{median, paired_ratio, round_order, Summary};
use crate::table::{rate, time_us, times, Table};

use super::Section;

mod args;
mod systems;

pub(crate) use args::LockArgs;

use systems::{run, Env, System, SYSTEMS};

/// Seconds of the lease each etcd session client grants once and keeps alive.
#[cfg(feature = "etcd")]
const SESSION_TTL_S: i64 = 10;

/// How long the first acquisition of each key may wait, beyond colony's quarantine.
const READY_SLACK: Duration = Duration::from_secs(30);

/// Why the etcd columns are empty in a build without the `etcd` feature.
#[cfg(not(feature = "etcd"))]
const ETCD_NOT_BUILT: &str = "etcd: not built; rebuild with `--features etcd` (needs protoc: \
                              apt-get install protobuf-compiler)";

/// How the locks scenario runs.
#[derive(Debug, Clone)]
pub(crate) struct LockSettings {
    /// Contended cell: time before the measured window.
    pub(crate) warmup: Duration,
    /// Contended cell: the measured window.
    pub(crate) duration: Duration,
    /// Runs of each cell per system, systems alternating.
    pub(crate) rounds: usize,
    /// Uncontended cell: measured pairs per run.
    pub(crate) pairs: usize,
    /// Uncontended cell: pairs before the measured ones.
    pub(crate) warmup_pairs: usize,
    /// Contended cell: clients (tasks), each with its own lease on etcd.
    pub(crate) clients: usize,
    /// Contended cell: keys; client i takes key i mod `keys`.
    pub(crate) keys: usize,
    /// TTL of colony's acquisitions and of etcd's lease-per-lock leases.
    pub(crate) ttl: Duration,
    /// colony's `lock_max_ttl`, on every node of the cluster.
    pub(crate) max_ttl: Duration,
    /// How long an acquisition may wait for its key before it counts as failed.
    pub(crate) wait: Duration,
    /// Where etcd's data directory goes (default `$TMPDIR`).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) etcd_dir: Option<PathBuf>,
    /// Run only the systems whose label contains this text.
    pub(crate) only: Option<String>,
}

#[cfg(feature = "etcd")]
impl LockSettings {
    /// etcd's lease-per-lock TTL: the colony TTL in whole seconds, at least 1 (etcd raises
    /// anything under its minimum, about 2 s with its default timing).
    fn ttl_s(&self) -> i64 {
        i64::try_from(self.ttl.as_secs_f64().ceil() as u64)
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// The two cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Uncontended,
    Contended,
}

impl Cell {
    fn name(self, s: &LockSettings) -> String {
        match self {
            Cell::Uncontended => "uncontended".into(),
            Cell::Contended => format!("contended ({} clients, {} keys)", s.clients, s.keys),
        }
    }

    /// Each client's key.
    fn keys(self, s: &LockSettings) -> Vec<String> {
        match self {
            Cell::Uncontended => vec!["bench/locks/solo".into()],
            Cell::Contended => (0..s.clients.max(1))
                .map(|i| format!("bench/locks/{}", i % s.keys.max(1)))
                .collect(),
        }
    }

    /// Every key the cell uses, once.
    fn distinct_keys(self, s: &LockSettings) -> Vec<String> {
        let mut keys = self.keys(s);
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Every round of `cell`: `[system][round]`, runs that could not start left out.
async fn cell_runs(
    env: &Env,
    cell: Cell,
    s: &LockSettings,
    notes: &mut Vec<String>,
) -> Vec<Vec<Summary>> {
    let mut runs = vec![Vec::new(); SYSTEMS.len()];
    let mut failed = vec![(0u64, None::<String>); SYSTEMS.len()];
    let what = cell.name(s);
    for round in 0..s.rounds {
        for i in round_order(round, SYSTEMS.len()) {
            let system = SYSTEMS[i];
            let selected = s
                .only
                .as_ref()
                .is_none_or(|only| system.label().contains(only.as_str()));
            if !selected || env.missing(system).is_some() {
                continue;
            }
            match run(env, system, cell, s).await {
                Ok((summary, first_error)) => {
                    eprintln!(
                        "  {what} round {}/{} {:<22} {:>9} pairs/s  p50 {:>9}  p99 {:>9}{}",
                        round + 1,
                        s.rounds,
                        system.label(),
                        rate(summary.throughput),
                        time_us(summary.p50_us),
                        time_us(summary.p99_us),
                        if summary.errors > 0 {
                            format!("  ({} errors)", summary.errors)
                        } else {
                            String::new()
                        },
                    );
                    if summary.errors > 0 {
                        failed[i].0 += summary.errors;
                        if failed[i].1.is_none() {
                            failed[i].1 = first_error;
                        }
                    }
                    runs[i].push(summary);
                }
                Err(e) => {
                    eprintln!("  {what} {}: run failed: {e}", system.label());
                    notes.push(format!("{} ({what}): a run failed: {e}", system.label()));
                }
            }
        }
    }
    for (system, (errors, first)) in SYSTEMS.iter().zip(failed) {
        if errors > 0 {
            notes.push(format!(
                "{} ({what}): {errors} failed acquire+release pairs; first: {}",
                system.label(),
                first.unwrap_or_default()
            ));
        }
    }
    runs
}

/// A table row: the medians of `f` per system, then the ratios of both colony placements
/// against etcd with a session lease, its fastest way (`colony ÷ etcd` when
/// `higher_is_better`, else `etcd ÷ colony`: >1 favours colony).
fn row(
    metric: String,
    runs: &[Vec<Summary>],
    f: fn(&Summary) -> f64,
    format: fn(f64) -> String,
    higher_is_better: bool,
) -> Vec<String> {
    let values: Vec<Vec<f64>> = runs.iter().map(|r| r.iter().map(f).collect()).collect();
    let mut cells = vec![metric];
    cells.extend(values.iter().map(|v| format(median(v))));
    let etcd = 2;
    for colony in [0, 1] {
        cells.push(times(if higher_is_better {
            paired_ratio(&values[colony], &values[etcd])
        } else {
            paired_ratio(&values[etcd], &values[colony])
        }));
    }
    cells
}

fn us(x: f64) -> String {
    time_us(x)
}

/// The locks scenario.
pub(crate) async fn locks(s: &LockSettings) -> Result<Vec<Section>, BoxError> {
    let mut notes = Vec::new();
    let env = Env::start(s, &mut notes).await;
    // Without the `etcd` feature the etcd columns are left out (rows are cut to the headers)
    // and a note says how to get them.
    let headers: &[&str] = if cfg!(feature = "etcd") {
        &[
            "metric",
            System::Colony.label(),
            System::ColonyMember.label(),
            System::EtcdSession.label(),
            System::EtcdPerLock.label(),
            "colony vs etcd (session)",
            "colony on a member vs etcd (session)",
        ]
    } else {
        &[
            "metric",
            System::Colony.label(),
            System::ColonyMember.label(),
        ]
    };
    let mut table = Table::new(headers);

    eprintln!("locks: {}", Cell::Uncontended.name(s));
    let solo = cell_runs(&env, Cell::Uncontended, s, &mut notes).await;
    let name = Cell::Uncontended.name(s);
    table.row(row(
        format!("{name}: pair p50"),
        &solo,
        |x| x.p50_us,
        us,
        false,
    ));
    table.row(row(
        format!("{name}: pair p99"),
        &solo,
        |x| x.p99_us,
        us,
        false,
    ));
    table.row(row(
        format!("{name}: pair mean"),
        &solo,
        Summary::mean_call_us,
        us,
        false,
    ));
    table.row(row(
        format!("{name}: pairs/s"),
        &solo,
        |x| x.throughput,
        rate,
        true,
    ));

    eprintln!("locks: {}", Cell::Contended.name(s));
    let busy = cell_runs(&env, Cell::Contended, s, &mut notes).await;
    let name = Cell::Contended.name(s);
    table.row(row(
        format!("{name}: acquisitions/s"),
        &busy,
        |x| x.throughput,
        rate,
        true,
    ));
    table.row(row(
        format!("{name}: pair p50"),
        &busy,
        |x| x.p50_us,
        us,
        false,
    ));
    table.row(row(
        format!("{name}: pair p99"),
        &busy,
        |x| x.p99_us,
        us,
        false,
    ));

    #[cfg(feature = "etcd")]
    if env.etcd.is_ok() {
        notes.push(
            "etcd, contended: a waiting `Lock` watches its predecessor's key from the revision \
             it has just read, a watch etcd serves from its unsynced-watcher loop, which runs \
             every 100 ms (mvcc `syncWatchersLoop`): a hand-over to a waiter takes up to \
             ~100 ms, which bounds etcd's contended rows (about 50 acquisitions/s per key), \
             not its CPU or disk."
                .into(),
        );
    }
    let checks = &env.colony_checks;
    if env.colony.is_ok() || env.colony_member.is_ok() {
        let problems = checks.problems();
        if problems.is_empty() {
            notes.push(format!(
                "colony: {} fencing tokens checked: distinct per key, increasing per client \
                 and key.",
                checks.tokens_seen()
            ));
        }
        for problem in problems {
            notes.push(format!("colony: {problem}"));
        }
    }
    let about = about(s, &env);
    env.stop().await;
    Ok(vec![Section {
        title: "11. Distributed locks, colony vs etcd".into(),
        about,
        table,
        notes,
        goals: Vec::new(),
    }])
}

fn about(s: &LockSettings, env: &Env) -> String {
    let colony = format!(
        "Acquire + release of a lock, all processes on 127.0.0.1; a pair holds nothing, so \
         its time is the lock service's (plus, contended, the wait for the key). colony: {} \
         server node processes, each running colony's lock replica service, and the bench's \
         client-only node; colony (client on a member): 2 server processes and the bench's \
         node as the third server (a service locking from inside the cluster: its own replica \
         is one of three); `lock_max_ttl` {:?} on every node; an acquisition is \
         `node.lock(key).ttl({:?}).wait({:?}).acquire()`, a release `guard.release()`.",
        lock_side::SERVERS,
        s.max_ttl,
        s.ttl,
        s.wait,
    );
    let cells = format!(
        "Uncontended: 1 client, 1 key, {} pairs of warm-up then {} measured one after the \
         other (mean = measured time ÷ pairs). Contended: {} clients on {} keys (client i \
         takes key i mod {}), each looping for {:?} after a {:?} warm-up; acquisitions/s \
         counts the pairs completed in the window. An acquisition waiting longer than {:?} \
         fails. {} round(s), systems alternating; figures are medians over rounds",
        s.warmup_pairs, s.pairs, s.clients, s.keys, s.keys, s.duration, s.warmup, s.wait, s.rounds,
    );
    #[cfg(feature = "etcd")]
    {
        let etcd_where = match &env.etcd {
            Ok((server, _)) => format!("data directory in {}", server.dir().display()),
            Err(_) => "not running".into(),
        };
        format!(
            "{colony} etcd: one member ({etcd_where}; every write is fsync'd to its WAL), \
             etcd-client 0.21, one HTTP/2 connection shared by every client. etcd (session \
             lease): each client grants a {SESSION_TTL_S} s lease once and keeps it alive \
             (etcd's `concurrency` package), then `Lock(key, lease)` + `Unlock(key)`, 2 RPCs a \
             pair. etcd (lease per lock): `LeaseGrant({} s)` + `Lock` + `Unlock` + \
             `LeaseRevoke` every time (a one-shot lock with a TTL), 4 RPCs a pair. {cells}, \
             ratios medians of same-round ratios, >1 favours colony in every row (latency: \
             etcd ÷ colony; rates: colony ÷ etcd).",
            s.ttl_s(),
        )
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = env;
        format!("{colony} etcd: not built (see below). {cells}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LockSettings {
        LockSettings {
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(3),
            rounds: 2,
            pairs: 1000,
            warmup_pairs: 100,
            clients: 16,
            keys: 3,
            ttl: Duration::from_millis(2000),
            max_ttl: Duration::from_secs(2),
            wait: Duration::from_secs(10),
            etcd_dir: None,
            only: None,
        }
    }

    #[test]
    fn clients_spread_over_the_keys() {
        let s = settings();
        let keys = Cell::Contended.keys(&s);
        assert_eq!(keys.len(), 16);
        assert_eq!(keys[0], keys[3]);
        assert_ne!(keys[0], keys[1]);
        assert_eq!(Cell::Contended.distinct_keys(&s).len(), 3);
        assert_eq!(Cell::Uncontended.keys(&s).len(), 1);
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn etcd_ttl_rounds_up_to_whole_seconds() {
        let mut s = settings();
        assert_eq!(s.ttl_s(), 2);
        s.ttl = Duration::from_millis(1500);
        assert_eq!(s.ttl_s(), 2);
        s.ttl = Duration::from_millis(10);
        assert_eq!(s.ttl_s(), 1);
    }

    #[test]
    fn ratios_favour_colony_above_one() {
        let summary = |throughput, p50_us| Summary {
            throughput,
            p50_us,
            p99_us: p50_us,
            p999_us: p50_us,
            max_us: p50_us,
            mb_per_s: 0.0,
            errors: 0,
        };
        // colony, colony on a member, etcd (session), etcd (lease per lock).
        let runs = vec![
            vec![summary(2000.0, 100.0)],
            vec![summary(4000.0, 50.0)],
            vec![summary(1000.0, 300.0)],
            vec![summary(500.0, 400.0)],
        ];
        let rates = row("r".into(), &runs, |x| x.throughput, rate, true);
        assert_eq!(rates[5..], ["2.00×", "4.00×"]);
        let latency = row("l".into(), &runs, |x| x.p50_us, us, false);
        assert_eq!(latency[5..], ["3.00×", "6.00×"]);
        assert_eq!(latency[1], "100 µs");
    }
}
