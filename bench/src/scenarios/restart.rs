//! Scenario 8: how long a service is gone after its one instance panics, colony's supervisor vs
//! a hand-written ractor supervisor.
//!
//! One sample: a call makes the only instance panic, and its error (`Internal`) returns; from
//! that moment the caller calls again back to back until a call succeeds, which only the
//! replacement can answer. The time between the two returns is the sample. Each failed poll
//! costs a refused call and two yields (see [`between_polls`]), so a sample overstates the
//! restart by at most one poll, a few microseconds (the notes give the average). colony's polls
//! are pinned to the node (`.at(addr)`: one attempt, no retry and no backoff in the client);
//! ractor's read the child the supervisor publishes and `call!` it. A random pause of up to 1 ms
//! comes before each panic (see [`random_phase`]).
//!
//! colony runs three policies, one service each: no backoff (the peer's behaviour), a 1 ms
//! backoff ceiling, and the default policy. Under the default a second restart within a minute
//! waits twice as long as the first, so every default-policy sample is the first restart of a
//! fresh service. Contenders alternate in blocks, A B C D, D C B A, ...

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::prelude::*;
use colony::{ClusterCa, RestartPolicy, ServiceRef};
use colony_actors::selector::random_below;
use serde::{Deserialize, Serialize};

use crate::certs::BoxError;
use crate::raw_supervisor::{between_polls, RawSupervised, Restart, GIVE_UP, PANIC};
use crate::stats::round_order;
use crate::table::{count, time_us, times, Table};

use super::{Section, SupervisionSettings};

/// Answers `()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {}

impl Message for Ping {
    type Reply = ();
    const ENDPOINT: &'static str = "Fragile.Ping";
}

/// Makes the handler panic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Crash {}

impl Message for Crash {
    type Reply = ();
    const ENDPOINT: &'static str = "Fragile.Crash";
}

/// A service that answers pings and panics when asked to.
struct Fragile;

impl Handler<Ping> for Fragile {
    async fn handle(&mut self, _: Ping, _: &Context) -> Result<(), Error> {
        Ok(())
    }
}

impl Handler<Crash> for Fragile {
    async fn handle(&mut self, _: Crash, _: &Context) -> Result<(), Error> {
        panic!("{PANIC}")
    }
}

/// Keeps the bench's own panics off stderr (hundreds of them); any other panic still prints.
/// Installed for the rest of the process: it only filters.
fn quiet_bench_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|s| s == PANIC)
            || info.payload().downcast_ref::<&str>() == Some(&PANIC);
        if !ours {
            previous(info);
        }
    }));
}

/// The restart policies of colony's rows.
#[derive(Clone, Copy)]
enum Policy {
    /// Restart at once, as the raw supervisor does.
    Immediate,
    /// Wait between 0.5 and 1 ms (equal jitter under a 1 ms ceiling).
    OneMs,
    /// `RestartPolicy::default()`, first restart of a fresh service: 5 to 10 ms.
    Default,
}

impl Policy {
    fn restart_policy(self) -> RestartPolicy {
        let fixed = |backoff| RestartPolicy {
            backoff,
            // The ceiling stays put: no doubling over a crash loop of hundreds of panics.
            max_backoff: backoff,
            max_restarts: u32::MAX,
            ..RestartPolicy::default()
        };
        match self {
            Policy::Immediate => fixed(Duration::ZERO),
            Policy::OneMs => fixed(Duration::from_millis(1)),
            Policy::Default => RestartPolicy::default(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Policy::Immediate => "backoff 0, no budget limit",
            Policy::OneMs => "backoff = max_backoff = 1 ms (waits 0.5–1 ms)",
            Policy::Default => "default: 10 ms ceiling, waits 5–10 ms (first restart)",
        }
    }
}

/// One system whose restarts are sampled.
enum Contender {
    Raw(RawSupervised),
    Colony {
        policy: Policy,
        /// The service under test (for `Policy::Default`, the prefix of a fresh one per sample).
        service: String,
        /// Its handle, for the restarts colony counted (`None` for `Policy::Default`).
        handle: Option<ServiceRef>,
    },
}

impl Contender {
    fn label(&self) -> String {
        match self {
            Contender::Raw(_) => "raw ractor supervisor".into(),
            Contender::Colony { policy, .. } => format!("colony, {}", policy.describe()),
        }
    }
}

fn fragile(node: &Node, name: &str, policy: Policy) -> colony::ServiceBuilder<Fragile> {
    node.service::<Fragile>(name)
        .instances(1)
        .restart_policy(policy.restart_policy())
        .handler::<Ping>()
        .handler::<Crash>()
}

/// One colony sample on `service`: the panicking call, then calls until one succeeds.
/// Refusals are tallied by their detail in `refusals`.
async fn colony_restart(
    client: &Client,
    addr: SocketAddr,
    service: &str,
    refusals: &mut Refusals,
) -> Result<Restart, String> {
    match client.request(service, Crash {}).at(addr).await {
        Err(e) if e.code() == Code::Internal => {}
        other => return Err(format!("the panicking call returned {other:?}")),
    }
    let failed = Instant::now();
    let mut polls = 0;
    let mut emptied = None;
    loop {
        match client.request(service, Ping {}).at(addr).await {
            Ok(()) => {
                return Ok(Restart {
                    took: failed.elapsed(),
                    polls,
                    emptied,
                })
            }
            Err(e) if e.code() == Code::Unavailable => {
                if refusals.count(e.detail()) && emptied.is_none() {
                    emptied = Some(failed.elapsed());
                }
            }
            Err(e) => return Err(format!("a poll failed with {e}")),
        }
        polls += 1;
        if failed.elapsed() > GIVE_UP {
            return Err(format!("no instance answered within {GIVE_UP:?}"));
        }
        between_polls().await;
    }
}

/// Why colony's polls were refused: the dead incarnation still in its slot (its mailbox closed:
/// "full"), or the slot empty until the replacement starts ("no running instance").
#[derive(Default)]
struct Refusals {
    full: u64,
    no_instance: u64,
    other: u64,
}

impl Refusals {
    /// Counts a refusal; true when it says the slot is empty.
    fn count(&mut self, detail: &str) -> bool {
        if detail.contains("full mailbox") {
            self.full += 1;
        } else if detail.contains("no running instance") {
            self.no_instance += 1;
            return true;
        } else {
            self.other += 1;
        }
        false
    }
}

/// Waits 0 to 1 ms, at random, off the runtime. Without it a crash loop panics just after the
/// timer tick that ended the last restart (tokio's timers tick every millisecond), and every
/// restart that waits on a timer would take a whole tick; here a panic lands anywhere between
/// two ticks, as one in production does. (`std::thread::sleep` has microsecond precision; a
/// tokio sleep would end on a tick again.)
async fn random_phase() {
    let pause = Duration::from_micros(random_below(1000) as u64);
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(pause)).await;
}

/// Nearest-rank percentile of sorted durations, in µs.
fn percentile_us(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

/// The samples of one contender, and why colony's polls were refused.
#[derive(Default)]
struct Samples {
    taken: Vec<Restart>,
    refusals: Refusals,
}

impl Samples {
    fn sorted(&self, f: impl Fn(&Restart) -> Option<Duration>) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.taken.iter().filter_map(f).collect();
        v.sort();
        v
    }
}

/// Takes one sample of `contender`; under the default policy, on a service of its own.
async fn sample(
    contender: &Contender,
    node: &Node,
    fresh: usize,
    refusals: &mut Refusals,
) -> Result<Restart, String> {
    let (client, addr) = (node.client(), node.addr());
    match contender {
        Contender::Raw(raw) => raw.restart_once().await,
        Contender::Colony {
            policy: Policy::Default,
            service,
            ..
        } => {
            // A fresh service: its restart budget has spent nothing yet.
            let name = format!("{service}-{fresh}");
            let svc = fragile(node, &name, Policy::Default)
                .spawn(|| Fragile)
                .await
                .map_err(|e| e.to_string())?;
            let sample = colony_restart(&client, addr, &name, refusals).await;
            svc.stop().await;
            sample
        }
        Contender::Colony { service, .. } => colony_restart(&client, addr, service, refusals).await,
    }
}

/// Scenario 8: restart latency after a panic, colony (three policies) vs raw ractor.
pub(crate) async fn restart(s: &SupervisionSettings) -> Result<Section, BoxError> {
    quiet_bench_panics();
    let ca = Arc::new(ClusterCa::generate()?);
    let node = Node::builder()
        .name("restart")
        .listen("127.0.0.1:0")
        .ca(ca)
        .start()
        .await?;
    let mut contenders = vec![Contender::Raw(RawSupervised::start().await?)];
    for (policy, name) in [
        (Policy::Immediate, "fragile-immediate"),
        (Policy::OneMs, "fragile-1ms"),
    ] {
        let handle = fragile(&node, name, policy).spawn(|| Fragile).await?;
        contenders.push(Contender::Colony {
            policy,
            service: name.into(),
            handle: Some(handle),
        });
    }
    contenders.push(Contender::Colony {
        policy: Policy::Default,
        service: "fragile-default".into(),
        handle: None,
    });

    let rounds = s.rounds.max(1);
    let mut all: Vec<Samples> = contenders.iter().map(|_| Samples::default()).collect();
    let mut failures = Vec::new();
    let mut fresh = 0;
    for round in 0..rounds {
        for i in round_order(round, contenders.len()) {
            let wanted = match &contenders[i] {
                Contender::Colony {
                    policy: Policy::Default,
                    ..
                } => s.default_panics,
                _ => s.panics,
            };
            let before = all[i].taken.len();
            for _ in 0..wanted.div_ceil(rounds) {
                random_phase().await;
                fresh += 1;
                match sample(&contenders[i], &node, fresh, &mut all[i].refusals).await {
                    Ok(restart) => all[i].taken.push(restart),
                    Err(e) => failures.push(format!("{}: {e}", contenders[i].label())),
                }
            }
            let block = Samples {
                taken: all[i].taken[before..].to_vec(),
                refusals: Refusals::default(),
            };
            let took = block.sorted(|r| Some(r.took));
            eprintln!(
                "  restart round {}/{rounds} {:<66} {:>4} restarts  p50 {:>9}  max {:>9}  slot emptied p50 {:>9}",
                round + 1,
                contenders[i].label(),
                took.len(),
                time_us(percentile_us(&took, 0.5)),
                time_us(percentile_us(&took, 1.0)),
                time_us(percentile_us(&block.sorted(|r| r.emptied), 0.5)),
            );
        }
    }

    let mut table = Table::new(&[
        "system",
        "restarts",
        "p50",
        "p99",
        "max",
        "slot emptied, p50",
        "polls / restart, median",
        "p50 ÷ raw ractor",
    ]);
    let mut notes = Vec::new();
    let raw_p50 = percentile_us(&all[0].sorted(|r| Some(r.took)), 0.5);
    for (i, (contender, samples)) in contenders.iter().zip(&all).enumerate() {
        let took = samples.sorted(|r| Some(r.took));
        let mut polls: Vec<u64> = samples.taken.iter().map(|r| r.polls).collect();
        polls.sort();
        let p50 = percentile_us(&took, 0.5);
        let emptied = samples.sorted(|r| r.emptied);
        table.row(vec![
            contender.label(),
            count(took.len() as u64),
            time_us(p50),
            time_us(percentile_us(&took, 0.99)),
            time_us(percentile_us(&took, 1.0)),
            if emptied.is_empty() {
                "–".into()
            } else {
                time_us(percentile_us(&emptied, 0.5))
            },
            polls
                .get(polls.len().saturating_sub(1) / 2)
                .map_or("n/a".into(), |p| count(*p)),
            if i == 0 {
                "1.00×".into()
            } else {
                times(p50 / raw_p50)
            },
        ]);
        let all_polls: u64 = polls.iter().sum();
        let total: Duration = took.iter().sum();
        let mut note = format!(
            "{}: {} polls in all, {:.2} µs of restart per poll; {} of {} restarts needed no \
             poll (the replacement answered the first call after the error)",
            contender.label(),
            count(all_polls),
            total.as_secs_f64() * 1e6 / all_polls.max(1) as f64,
            count(polls.iter().filter(|&&p| p == 0).count() as u64),
            count(polls.len() as u64),
        );
        let r = &samples.refusals;
        if r.full + r.no_instance + r.other > 0 {
            note.push_str(&format!(
                "; refused with \"full mailbox\" (dead incarnation still in its slot) {}, \"no \
                 running instance\" {}, other {}",
                count(r.full),
                count(r.no_instance),
                count(r.other)
            ));
        }
        if let Contender::Colony {
            handle: Some(handle),
            ..
        } = contender
        {
            // Cross-check: the supervisor's own count against the samples taken.
            note.push_str(&format!(
                "; `ServiceRef::restarts()` = {}",
                count(handle.restarts())
            ));
        }
        notes.push(note);
    }
    if !failures.is_empty() {
        notes.push(format!(
            "{} sample(s) failed; first: {}",
            failures.len(),
            failures[0]
        ));
    }
    for contender in &contenders {
        if let Contender::Raw(raw) = contender {
            raw.stop();
        }
    }
    node.shutdown().await;
    Ok(Section {
        title: "8. Restart after a panic: colony vs raw ractor".into(),
        about: format!(
            "One instance; a call makes it panic, then the caller calls back to back until the \
             replacement answers (between tries `sched_yield` and tokio's `yield_now`; before \
             each panic a random 0–1 ms pause). Time from the panicking call's error to the \
             first success; {} samples per system ({} for the default policy, each on a fresh \
             service), in {rounds} alternating blocks. colony's calls are `.at(addr)`: one \
             attempt, no client retry. Slot emptied: when colony's first poll was refused for \
             want of a running instance (the supervisor had handled the exit). Raw: a ractor \
             supervisor that spawns a new linked child in `handle_supervisor_evt` at once and \
             publishes it in a `Mutex` the caller reads before each `call!`.",
            s.panics, s.default_panics
        ),
        table,
        notes,
        goals: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=200).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&sorted, 0.5), 100.0);
        assert_eq!(percentile_us(&sorted, 0.99), 198.0);
        assert_eq!(percentile_us(&sorted, 1.0), 200.0);
        assert!(percentile_us(&[], 0.5).is_nan());
    }

    #[test]
    fn refusals_tell_an_emptied_slot() {
        let mut r = Refusals::default();
        assert!(!r.count("every instance of x has a full mailbox; try another node"));
        assert!(r.count("no running instance of x"));
        assert!(!r.count("something else"));
        assert_eq!((r.full, r.no_instance, r.other), (1, 1, 1));
    }
}
