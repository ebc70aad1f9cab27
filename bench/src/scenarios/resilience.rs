//! Scenario 6: three servers called as one service while one fails every call or is killed.
//!
//! colony: three server processes joined in one cluster with this process's client node,
//! called by name (p2c, the default, and round-robin) with idempotent calls and 2 retries.
//! The peer: three tonic+TLS server processes behind one `Channel::balance_list` (tower's
//! p2c, no retries: what a tonic user gets). Every run starts its own fleet, so each fault
//! meets fresh processes and a fresh client.

use colony::InstanceReport;

use crate::colony_side::{strategy_name, ColonyCaller, RETRIES, SERVICE};
use crate::fault::{drive_with_fault, kill_at, Fault};
use crate::fleet::{Fleet, FleetClient, FleetEnv, Servers, System};
use crate::load::{drive, Caller, Plan};
use crate::stats::{paired_ratio, Sample, Summary};
use crate::table::{count, rate, time_us, times, Table};
use crate::tonic_side::TonicCaller;

use super::*;

/// Server processes per fleet.
const SERVERS: usize = 3;

/// The server that fails every call under [`Fault::FailingServer`] (the kill takes the last).
const FAILING: usize = 1;

/// One system under one fault.
struct Trial<'a> {
    env: &'a FleetEnv,
    system: System,
    fault: Fault,
    instances: usize,
    label: String,
}

impl Contender for Trial<'_> {
    fn label(&self) -> &str {
        &self.label
    }

    async fn run(&self, plan: Plan, payload: usize) -> Summary {
        match self.run_once(plan, payload).await {
            Ok(sample) => {
                if let Some(e) = &sample.first_error {
                    eprintln!("  {}: first failure: {e}", self.label);
                }
                sample.summarise(plan.duration, payload)
            }
            Err(e) => failed(&self.label, e),
        }
    }
}

impl Trial<'_> {
    async fn run_once(&self, plan: Plan, payload: usize) -> Result<Sample, BoxError> {
        let failing = (self.fault == Fault::FailingServer).then_some(FAILING);
        let mut fleet =
            Fleet::start(self.env, self.system, SERVERS, self.instances, failing).await?;
        let body = body(payload);
        let Fleet { servers, client } = &mut fleet;
        let sample = match client {
            FleetClient::Colony { node, strategy } => {
                let (client, strategy) = (node.client(), *strategy);
                let make = || {
                    ColonyCaller::new(client.clone(), None, body.clone())
                        .strategy(Some(strategy))
                        .resilient()
                };
                let sample = load(plan, make, self.fault, servers).await;
                let report = client.instance_report(SERVICE).await;
                eprintln!("  {}: {}", self.label, spread(&report));
                sample
            }
            FleetClient::Tonic(channel) => {
                let make = || TonicCaller::new(channel.clone(), body.clone());
                load(plan, make, self.fault, servers).await
            }
        };
        fleet.stop().await;
        Ok(sample)
    }
}

/// Drives the load, killing the last server a third into the window under [`Fault::Kill`].
async fn load<C: Caller>(
    plan: Plan,
    make: impl FnMut() -> C,
    fault: Fault,
    servers: &mut Servers,
) -> Sample {
    if fault != Fault::Kill {
        return drive(plan, make).await;
    }
    let (sample, pid) = drive_with_fault(plan, make, kill_at(&plan), servers.kill_last()).await;
    match pid {
        Some(pid) => eprintln!(
            "  killed server pid {pid} (SIGKILL) {:?} in",
            kill_at(&plan)
        ),
        None => eprintln!("  no server to kill"),
    }
    sample
}

/// Attempts per instance as the client's selector counted them (warm-up included), e.g.
/// `echo-0 41,000 | echo-1 12 (12 failed, ejected, ejected 1×)`.
fn spread(report: &[InstanceReport]) -> String {
    let mut parts: Vec<String> = report
        .iter()
        .map(|i| {
            let mut part = format!("{} {}", i.node, count(i.calls));
            if i.failures > 0 {
                part.push_str(&format!(" ({} failed, {}", count(i.failures), i.health));
                if i.ejections > 0 {
                    part.push_str(&format!(", ejected {}×", i.ejections));
                }
                part.push(')');
            }
            part
        })
        .collect();
    parts.sort();
    format!("attempts {}", parts.join(" | "))
}

fn label(system: System) -> String {
    match system {
        System::Colony(s) => format!(
            "colony by name, {} (idempotent, {RETRIES} retries)",
            strategy_name(s)
        ),
        System::Tonic => "tonic+TLS, balance_list p2c (no retries)".into(),
    }
}

/// Scenario 6: throughput, failed calls and the longest call under each fault.
pub(crate) async fn resilience(settings: &Settings) -> Result<Section, BoxError> {
    let env = FleetEnv::create()?;
    let systems = [
        System::Colony(colony::Strategy::PowerOfTwoChoices),
        System::Colony(colony::Strategy::RoundRobin),
        System::Tonic,
    ];
    let peer_at = systems.len() - 1;
    let c = settings.fleet_concurrency;
    let mut table = Table::new(&[
        "fault",
        "system",
        "req/s",
        "failed calls",
        "p99",
        "p99.9",
        "longest call",
        "req/s vs tonic+TLS",
    ]);
    let mut notes = Vec::new();
    for &fault in &settings.faults {
        eprintln!("resilience: fault {}", fault.label());
        let trials: Vec<Trial<'_>> = systems
            .iter()
            .map(|&system| Trial {
                env: &env,
                system,
                fault,
                instances: settings.instances[0],
                label: label(system),
            })
            .collect();
        let contenders: Vec<&Trial<'_>> = trials.iter().collect();
        let runs = alternate(
            fault.label(),
            &contenders,
            settings,
            settings.plan(c),
            settings.payload,
            &mut notes,
        )
        .await;
        let peer = &runs[peer_at];
        for (i, trial) in trials.iter().enumerate() {
            if runs[i].is_empty() {
                continue;
            }
            let m = Summary::median_of(&runs[i]);
            let longest = runs[i].iter().map(|s| s.max_us).fold(f64::NAN, f64::max);
            let vs = if i == peer_at {
                "1.00× (peer)".to_string()
            } else {
                times(paired_ratio(
                    &field(&runs[i], |s| s.throughput),
                    &field(peer, |s| s.throughput),
                ))
            };
            table.row(vec![
                fault.label().to_string(),
                trial.label.clone(),
                rate(m.throughput),
                count(m.errors),
                time_us(m.p99_us),
                time_us(m.p999_us),
                time_us(longest),
                vs,
            ]);
        }
    }
    Ok(Section {
        title: format!("6. Resilience: {SERVERS} servers, concurrency {c}"),
        about: format!(
            "{SERVERS} server processes per system, started afresh for every run; the client \
             in the bench process. colony: the servers (echo service, {} instances each) and \
             the client node form one cluster; calls by name, idempotent, {RETRIES} retries, \
             5 s deadline. tonic+TLS: `Channel::balance_list` over the {SERVERS} servers (tower \
             p2c; tonic's connections report a load of 0, so the choice is random among ready \
             servers), 5 s timeout, no retries. Faults: server {} answers every call with \
             Unavailable; or the last server is killed with SIGKILL a third into the window. \
             req/s counts successful calls; failed calls are summed over all runs; p99 and \
             p99.9 are medians across runs; the longest call is the slowest successful call \
             of any run.",
            settings.instances[0],
            FAILING + 1
        ),
        table,
        notes,
        goals: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: &str, calls: u64, failures: u64, health: &str) -> InstanceReport {
        InstanceReport {
            id: format!("echo@{node}"),
            node: node.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            local: false,
            health: health.into(),
            outstanding: 0,
            latency_us: None,
            consecutive_failures: 0,
            ejected_for_ms: None,
            ejections: 0,
            calls,
            failures,
        }
    }

    #[test]
    fn the_spread_lists_instances_in_order_with_their_failures() {
        let mut ejected = report("echo-1", 12, 12, "ejected");
        ejected.ejections = 2;
        let seen = [
            ejected,
            report("echo-0", 41_000, 0, "healthy"),
            report("echo-2", 40_000, 3, "healthy"),
        ];
        assert_eq!(
            spread(&seen),
            "attempts echo-0 41,000 | echo-1 12 (12 failed, ejected, ejected 2×) | \
             echo-2 40,000 (3 failed, healthy)"
        );
        assert_eq!(spread(&[]), "attempts ");
    }

    #[test]
    fn labels_name_the_strategy_and_the_retries() {
        assert_eq!(
            label(System::Colony(colony::Strategy::PowerOfTwoChoices)),
            "colony by name, p2c (idempotent, 2 retries)"
        );
        assert!(label(System::Tonic).contains("no retries"));
    }
}
