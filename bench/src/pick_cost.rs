//! What choosing an instance costs: `colony_actors::selector::pick`, in ns per pick.
//!
//! Each strategy, and a keyed (rendezvous) pick, over tables of 3 and 16 instances held as the
//! runtime holds them (`Arc`s of a `Candidate` with a live `Load`), every instance eligible,
//! none probing. The reference is the old cost model of round-robin: one
//! `AtomicUsize::fetch_add` and an index. A second set of rows has one instance ejected (what
//! a failing instance costs the pick). One thread, no contention; picks run back to back on a
//! plain thread (`spawn_blocking`), every result passed through `black_box`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony_actors::selector::{pick, stable_hash, Candidate, Health, Load, Strategy};

use crate::scenarios::{Section, Settings};
use crate::stats::{median, paired_ratio, round_order};
use crate::table::{times, Table};

/// Picks per timed run.
const PICKS: u64 = 2_000_000;

/// A run stops early past this (a loaded machine); its rate comes from the picks it made.
const RUN_LIMIT: Duration = Duration::from_secs(2);

/// Picks between two looks at the clock.
const BATCH: u64 = 10_000;

/// Table sizes measured.
const SIZES: [usize; 2] = [3, 16];

/// One instance, as the selector's table holds it.
struct Slot {
    load: Load,
    hash: u64,
}

impl Candidate for Slot {
    fn load(&self) -> &Load {
        &self.load
    }
    fn is_local(&self) -> bool {
        false
    }
    fn id_hash(&self) -> u64 {
        self.hash
    }
}

/// `n` instances with distinct smoothed latencies (100 µs, 110 µs, ...), none local.
fn table(n: usize) -> Vec<Arc<Slot>> {
    (0..n)
        .map(|i| {
            let slot = Slot {
                load: Load::default(),
                hash: stable_hash(format!("echo@node-{i}").as_bytes()),
            };
            slot.load
                .observe(Duration::from_micros(100 + 10 * i as u64));
            Arc::new(slot)
        })
        .collect()
}

/// The same table with instance 1 ejected.
fn with_one_ejected(table: &[Arc<Slot>]) -> &[Arc<Slot>] {
    table[1].load.set_health(Health::Ejected);
    table
}

/// How one pick is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// The old model: `fetch_add` and an index.
    OldRoundRobin,
    /// `pick` with a strategy and no key.
    Pick(Strategy),
    /// `pick` with a key (a new one per pick): rendezvous hashing over every instance.
    Keyed,
    /// `pick` with a strategy, one instance of the table ejected.
    Ejected(Strategy),
}

const METHODS: [Method; 10] = [
    Method::OldRoundRobin,
    Method::Pick(Strategy::RoundRobin),
    Method::Pick(Strategy::Random),
    Method::Pick(Strategy::LeastOutstanding),
    Method::Pick(Strategy::PowerOfTwoChoices),
    Method::Pick(Strategy::LocalFirst),
    Method::Keyed,
    Method::Ejected(Strategy::RoundRobin),
    Method::Ejected(Strategy::Random),
    Method::Ejected(Strategy::PowerOfTwoChoices),
];

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::OldRoundRobin => "old round-robin: fetch_add + index (reference)",
            Method::Pick(Strategy::RoundRobin) => "pick RoundRobin",
            Method::Pick(Strategy::Random) => "pick Random",
            Method::Pick(Strategy::LeastOutstanding) => "pick LeastOutstanding",
            Method::Pick(Strategy::PowerOfTwoChoices) => "pick PowerOfTwoChoices (default)",
            Method::Pick(Strategy::LocalFirst) => "pick LocalFirst (no local instance: p2c)",
            Method::Pick(_) => "pick (other)",
            Method::Keyed => "pick with .key(k): rendezvous",
            Method::Ejected(Strategy::RoundRobin) => "pick RoundRobin, 1 instance ejected",
            Method::Ejected(Strategy::Random) => "pick Random, 1 instance ejected",
            Method::Ejected(Strategy::PowerOfTwoChoices) => "pick PowerOfTwoChoices, 1 ejected",
            Method::Ejected(_) => "pick (other), 1 instance ejected",
        }
    }
}

/// A timed run: picks made and the time they took.
#[derive(Debug, Clone, Copy)]
struct Run {
    picks: u64,
    elapsed: Duration,
}

impl Run {
    fn ns_per_pick(self) -> f64 {
        if self.picks == 0 {
            f64::NAN
        } else {
            self.elapsed.as_nanos() as f64 / self.picks as f64
        }
    }
}

/// Makes `count` picks with `next` (its argument counts the picks), handing each result to
/// `sink`; stops at the first batch boundary past `limit`.
fn time_picks(
    count: u64,
    limit: Duration,
    mut next: impl FnMut(u64) -> Option<usize>,
    mut sink: impl FnMut(Option<usize>),
) -> Run {
    let start = Instant::now();
    let mut done = 0;
    while done < count {
        let batch = BATCH.min(count - done);
        for k in done..done + batch {
            sink(next(k));
        }
        done += batch;
        if start.elapsed() > limit {
            break;
        }
    }
    Run {
        picks: done,
        elapsed: start.elapsed(),
    }
}

/// One run of `method` over `table` (over `degraded`, the same with one instance ejected, for
/// [`Method::Ejected`]).
fn measure(
    method: Method,
    (table, degraded): (&[Arc<Slot>], &[Arc<Slot>]),
    count: u64,
    limit: Duration,
    sink: impl FnMut(Option<usize>),
) -> Run {
    let rr = AtomicUsize::new(0);
    let n = table.len();
    let all = |_: usize, _: &Arc<Slot>| true;
    match method {
        Method::OldRoundRobin => time_picks(
            count,
            limit,
            |_| {
                let i = rr.fetch_add(1, Relaxed) % n;
                black_box(&table[i]);
                Some(i)
            },
            sink,
        ),
        Method::Pick(strategy) => time_picks(
            count,
            limit,
            |_| pick(strategy, None, table, &rr, false, all),
            sink,
        ),
        Method::Keyed => time_picks(
            count,
            limit,
            |k| {
                let key = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                pick(
                    Strategy::PowerOfTwoChoices,
                    Some(key),
                    table,
                    &rr,
                    false,
                    all,
                )
            },
            sink,
        ),
        Method::Ejected(strategy) => time_picks(
            count,
            limit,
            |_| pick(strategy, None, degraded, &rr, false, all),
            sink,
        ),
    }
}

/// `ns/pick` of every method and size, `rounds` runs each, methods alternating per round.
/// Returns `[size][method][round]`.
fn measure_all(rounds: usize, count: u64, limit: Duration) -> Vec<Vec<Vec<f64>>> {
    SIZES
        .iter()
        .map(|&n| {
            let (healthy, degraded) = (table(n), table(n));
            let tables = (&healthy[..], with_one_ejected(&degraded));
            let mut runs = vec![Vec::new(); METHODS.len()];
            for round in 0..rounds {
                for m in round_order(round, METHODS.len()) {
                    let run = measure(METHODS[m], tables, count, limit, |i| {
                        black_box(i);
                    });
                    runs[m].push(run.ns_per_pick());
                }
            }
            runs
        })
        .collect()
}

fn ns(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1} ns")
    } else {
        "n/a".into()
    }
}

/// The pick-cost section: ns per pick, and each method's cost ÷ the old round-robin's.
pub(crate) async fn run(settings: &Settings) -> Section {
    let rounds = settings.rounds.max(1);
    eprintln!(
        "pick: {} methods × {SIZES:?} instances × {rounds} rounds",
        METHODS.len()
    );
    let measured = tokio::task::spawn_blocking(move || measure_all(rounds, PICKS, RUN_LIMIT)).await;
    let mut table = Table::new(&[
        "method",
        "3 instances",
        "16 instances",
        "÷ old round-robin (3)",
        "÷ old round-robin (16)",
    ]);
    let mut notes = Vec::new();
    match measured {
        Ok(runs) => {
            for (m, method) in METHODS.iter().enumerate() {
                let cost = |s: usize| ns(median(&runs[s][m]));
                let vs = |s: usize| times(paired_ratio(&runs[s][m], &runs[s][0]));
                table.row(vec![
                    method.label().to_string(),
                    cost(0),
                    cost(1),
                    vs(0),
                    vs(1),
                ]);
            }
        }
        Err(e) => notes.push(format!("measurement thread failed: {e}")),
    }
    Section {
        title: "5. Selector pick cost".into(),
        about: format!(
            "`colony_actors::selector::pick` alone, {PICKS} picks per run (fewer if a run \
             passes {RUN_LIMIT:?}), {rounds} run(s) per method alternating, median ns per \
             pick. Tables of `Arc`s of a `Candidate` with a live `Load` (distinct latencies, \
             nothing in flight), every instance eligible, none probing; one thread, so the \
             round-robin counter is never contended. A keyed pick gets a new key each time; \
             the key's hash itself (`.key(k)`, FNV-1a over the key's bytes) is paid when the \
             call is built and is not included. The call path adds the filter and endpoint \
             checks of its `eligible` closure, not measured here. The last rows eject \
             instance 1 of the table (as outlier ejection does to a failing instance)."
        ),
        table,
        notes,
        goals: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts picks per instance.
    fn hits(method: Method, n: usize, count: u64) -> (Run, Vec<u64>) {
        let (healthy, degraded) = (table(n), table(n));
        let tables = (&healthy[..], with_one_ejected(&degraded));
        let mut seen = vec![0; n];
        let run = measure(method, tables, count, Duration::MAX, |i| {
            seen[i.expect("every instance is eligible")] += 1;
        });
        (run, seen)
    }

    #[test]
    fn every_method_picks_every_time() {
        for method in METHODS {
            for n in SIZES {
                let (run, seen) = hits(method, n, 3_000);
                assert_eq!(run.picks, 3_000, "{method:?}");
                assert_eq!(seen.iter().sum::<u64>(), 3_000, "{method:?}");
            }
        }
    }

    #[test]
    fn round_robin_old_and_new_spread_exactly() {
        assert_eq!(hits(Method::OldRoundRobin, 3, 3_000).1, vec![1_000; 3]);
        let (_, seen) = hits(Method::Pick(Strategy::RoundRobin), 16, 1_600);
        assert_eq!(seen, vec![100; 16]);
    }

    #[test]
    fn p2c_never_picks_the_slowest_and_keys_spread() {
        // Instance n-1 has the highest latency: two distinct draws never make it win.
        let (_, seen) = hits(Method::Pick(Strategy::PowerOfTwoChoices), 3, 3_000);
        assert_eq!(seen[2], 0, "{seen:?}");
        // A new key per pick: every instance owns some keys.
        let (_, seen) = hits(Method::Keyed, 16, 16_000);
        assert!(seen.iter().all(|&s| s > 0), "{seen:?}");
    }

    #[test]
    fn an_ejected_instance_is_never_picked() {
        for strategy in [Strategy::RoundRobin, Strategy::PowerOfTwoChoices] {
            let (_, seen) = hits(Method::Ejected(strategy), 3, 3_000);
            assert_eq!(seen[1], 0, "{strategy:?}: {seen:?}");
        }
    }

    #[test]
    fn a_run_past_its_limit_stops_at_a_batch_boundary() {
        let table = table(3);
        let tables = (&table[..], &table[..]);
        let stop = |count| measure(Method::OldRoundRobin, tables, count, Duration::ZERO, |_| {});
        assert_eq!(stop(5 * BATCH).picks, BATCH);
        assert_eq!(stop(BATCH / 2).picks, BATCH / 2);
    }

    #[test]
    fn rates_and_shape() {
        let run = Run {
            picks: 4,
            elapsed: Duration::from_nanos(10),
        };
        assert_eq!(run.ns_per_pick(), 2.5);
        assert!(Run {
            picks: 0,
            elapsed: Duration::ZERO
        }
        .ns_per_pick()
        .is_nan());
        assert_eq!(ns(2.25), "2.2 ns");
        let all = measure_all(2, 100, Duration::MAX);
        assert_eq!(all.len(), SIZES.len());
        assert!(all.iter().all(|s| s.len() == METHODS.len()));
        assert!(all.iter().flatten().all(|r| r.len() == 2));
    }
}
