//! Scenarios 1 and 2: unary RPC and the payload sweep, two processes, colony vs tonic.

use std::sync::Arc;

use colony::{ClusterCa, Node, Strategy};
use tonic::transport::Channel;

use crate::certs::{BoxError, Pki};
use crate::child::{ChildServer, ServeOptions, ServerKind, WorkDir};
use crate::colony_side::{self, strategy_name, ColonyCaller};
use crate::load::{drive, Plan};
use crate::stats::{paired_ratio, Summary};
use crate::table::{mb_per_s, rate, size, time_us, times, Goal, Table, Want};
use crate::tonic_side::{self, TonicCaller};

use super::*;

/// A system called from this process, served by a child.
enum Remote {
    /// colony, called at the server's address (`.at(addr)`, no selection) or, when `addr` is
    /// `None`, by name through the selector with `strategy`.
    Colony {
        label: String,
        client: colony::Client,
        addr: Option<std::net::SocketAddr>,
        strategy: Option<Strategy>,
    },
    Tonic {
        label: String,
        channel: Channel,
    },
}

impl Contender for Remote {
    fn label(&self) -> &str {
        match self {
            Remote::Colony { label, .. } | Remote::Tonic { label, .. } => label,
        }
    }

    async fn run(&self, plan: Plan, payload: usize) -> Summary {
        let body = body(payload);
        let sample = match self {
            Remote::Colony {
                client,
                addr,
                strategy,
                ..
            } => {
                drive(plan, || {
                    ColonyCaller::new(client.clone(), *addr, body.clone()).strategy(*strategy)
                })
                .await
            }
            Remote::Tonic { channel, .. } => {
                drive(plan, || TonicCaller::new(channel.clone(), body.clone())).await
            }
        };
        sample.summarise(plan.duration, payload)
    }
}

/// The child servers and this process's clients of scenarios 1 and 2.
pub(crate) struct RemoteEnv {
    _dir: WorkDir,
    children: Vec<ChildServer>,
    client_node: Node,
    /// A second client node, joined to the first colony server's cluster, calling by name.
    by_name_node: Option<Node>,
    /// One colony server per instance count, in the order of the settings.
    colony: Vec<Remote>,
    /// colony by name, one per strategy of the settings (the first server, through the
    /// selector: a table of one instance).
    by_name: Vec<Remote>,
    tonic_tls: Remote,
    tonic_plain: Remote,
}

impl RemoteEnv {
    /// Writes the certificates, starts the three servers and connects to them.
    pub(crate) async fn start(settings: &Settings) -> Result<Self, BoxError> {
        let dir = WorkDir::create()?;
        let ca = Arc::new(ClusterCa::generate()?);
        std::fs::write(dir.path().join(colony_quic::CA_FILE), ca.to_pem())?;
        let pki = Pki::generate()?;
        pki.write(dir.path())?;

        let mut servers: Vec<(ServerKind, usize)> = settings
            .instances
            .iter()
            .map(|&n| (ServerKind::Colony, n))
            .collect();
        servers.push((ServerKind::TonicTls, 0));
        servers.push((ServerKind::TonicPlain, 0));
        let mut children = Vec::new();
        for (kind, instances) in servers {
            let options = ServeOptions::instances(instances);
            let child = ChildServer::start(kind, dir.path(), &options).await?;
            eprintln!(
                "started {kind:?} server at {} (pid {})",
                child.addr(),
                child.pid().unwrap_or(0)
            );
            children.push(child);
        }
        let client_node = colony_side::start_client("bench-client", &ca).await?;
        let colony = settings
            .instances
            .iter()
            .zip(&children)
            .map(|(n, child)| Remote::Colony {
                label: format!("colony ({n} instances)"),
                client: client_node.client(),
                addr: Some(child.addr()),
                strategy: None,
            })
            .collect();
        let by_name_node = if settings.by_name.is_empty() {
            None
        } else {
            let seed = children[0].addr();
            Some(colony_side::join_client("bench-client-by-name", &ca, seed, 1).await?)
        };
        let by_name = by_name_node
            .iter()
            .flat_map(|node| {
                settings.by_name.iter().map(|&strategy| Remote::Colony {
                    label: format!(
                        "colony by name, {} (1-instance table)",
                        strategy_name(strategy)
                    ),
                    client: node.client(),
                    addr: None,
                    strategy: Some(strategy),
                })
            })
            .collect();
        let k = settings.instances.len();
        let tonic_tls = Remote::Tonic {
            label: "tonic+TLS".into(),
            channel: tonic_side::connect(children[k].addr(), Some(&pki)).await?,
        };
        let tonic_plain = Remote::Tonic {
            label: "tonic (no TLS)".into(),
            channel: tonic_side::connect(children[k + 1].addr(), None).await?,
        };
        Ok(Self {
            _dir: dir,
            children,
            client_node,
            by_name_node,
            colony,
            by_name,
            tonic_tls,
            tonic_plain,
        })
    }

    /// Closes the clients and stops the children.
    pub(crate) async fn stop(self) {
        let Self {
            children,
            client_node,
            by_name_node,
            colony,
            by_name,
            tonic_tls,
            tonic_plain,
            _dir,
        } = self;
        drop((colony, by_name, tonic_tls, tonic_plain));
        client_node.shutdown().await;
        if let Some(node) = by_name_node {
            node.shutdown().await;
        }
        for child in children {
            child.stop().await;
        }
    }
}

/// Scenario 1: unary RPC at each concurrency, colony vs tonic+TLS (and tonic in clear).
pub(crate) async fn rpc(env: &RemoteEnv, settings: &Settings) -> Section {
    // colony first (one per instance count, then by name), then the peer every ratio is taken
    // against.
    let mut contenders: Vec<&Remote> = env.colony.iter().collect();
    let by_name_at = contenders.len();
    contenders.extend(&env.by_name);
    let peer_at = contenders.len();
    contenders.push(&env.tonic_tls);
    contenders.push(&env.tonic_plain);
    let mut table = Table::new(&[
        "concurrency",
        "system",
        "req/s",
        "p50",
        "p99",
        "req/s vs tonic+TLS",
        "p99 vs tonic+TLS",
    ]);
    let mut notes = Vec::new();
    let mut goals = vec![
        Goal {
            id: "P1",
            what: "throughput at c=64, colony ÷ tonic+TLS".into(),
            target: 1.5,
            want: Want::AtLeast,
            measured: f64::NAN,
        },
        Goal {
            id: "P2",
            what: "p99 latency at c=64, colony ÷ tonic+TLS".into(),
            target: 0.8,
            want: Want::AtMost,
            measured: f64::NAN,
        },
    ];
    for &c in &settings.concurrency {
        eprintln!("rpc: concurrency {c}");
        let runs = alternate(
            &format!("c={c}"),
            &contenders,
            settings,
            settings.plan(c),
            settings.payload,
            &mut notes,
        )
        .await;
        let peer = &runs[peer_at];
        for (i, contender) in contenders.iter().enumerate() {
            if runs[i].is_empty() {
                continue;
            }
            let m = Summary::median_of(&runs[i]);
            let (tput, p99) = if i == peer_at {
                ("1.00× (peer)".to_string(), "1.00× (peer)".to_string())
            } else {
                (
                    times(paired_ratio(
                        &field(&runs[i], |s| s.throughput),
                        &field(peer, |s| s.throughput),
                    )),
                    times(paired_ratio(
                        &field(&runs[i], |s| s.p99_us),
                        &field(peer, |s| s.p99_us),
                    )),
                )
            };
            table.row(vec![
                c.to_string(),
                contender.label().to_string(),
                rate(m.throughput),
                time_us(m.p50_us),
                time_us(m.p99_us),
                tput,
                p99,
            ]);
            error_notes(&mut notes, &format!("c={c}"), contender.label(), &runs[i]);
        }
        if c == 64 {
            goals[0].measured = paired_ratio(
                &field(&runs[0], |s| s.throughput),
                &field(peer, |s| s.throughput),
            );
            goals[1].measured =
                paired_ratio(&field(&runs[0], |s| s.p99_us), &field(peer, |s| s.p99_us));
            for (k, &strategy) in settings.by_name.iter().enumerate() {
                let runs = &runs[by_name_at + k];
                goals.push(Goal {
                    id: by_name_goal(strategy),
                    what: format!(
                        "P1 by name, {} (1-instance table), colony ÷ tonic+TLS",
                        strategy_name(strategy)
                    ),
                    target: 1.5,
                    want: Want::AtLeast,
                    measured: paired_ratio(
                        &field(runs, |s| s.throughput),
                        &field(peer, |s| s.throughput),
                    ),
                });
            }
        }
    }
    Section {
        title: "1. Unary RPC, two processes".into(),
        about: format!(
            "Client in the bench process, server in a child process, 127.0.0.1. Echo of a \
             {}-byte payload (`{{id: u64, body: string}}`). N tasks share one connection (one \
             QUIC connection for colony, one HTTP/2 channel for tonic), each calling in a loop. \
             colony and tonic+TLS both use TLS 1.3 on ring with client certificates. \
             `colony (N instances)` calls with `.at(addr)` (no selection); `colony by name` \
             rows call the service by name from a second client node in the server's cluster, \
             with the strategy shown: the selector's table holds one instance (one server \
             process), so `pick` returns before any strategy runs and these rows measure the \
             by-name call path, not the strategies (see scenario 6 for three servers).",
            settings.payload
        ),
        table,
        notes,
        goals,
    }
}

/// The goal id of P1 measured by name with `strategy`.
fn by_name_goal(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::RoundRobin => "P1-rr",
        Strategy::PowerOfTwoChoices => "P1-p2c",
        _ => "P1-by-name",
    }
}

/// Scenario 2: payload sweep at one concurrency, colony vs tonic+TLS.
pub(crate) async fn sweep(env: &RemoteEnv, settings: &Settings) -> Section {
    let contenders = [&env.colony[0], &env.tonic_tls];
    let c = settings.sweep_concurrency;
    let mut table = Table::new(&[
        "payload",
        "system",
        "req/s",
        "MB/s",
        "p50",
        "p99",
        "req/s vs tonic+TLS",
    ]);
    let mut notes = Vec::new();
    for &payload in &settings.sweep_sizes {
        eprintln!("sweep: payload {}", size(payload));
        let runs = alternate(
            &size(payload),
            &contenders,
            settings,
            settings.plan(c),
            payload,
            &mut notes,
        )
        .await;
        for (i, contender) in contenders.iter().enumerate() {
            if runs[i].is_empty() {
                continue;
            }
            let m = Summary::median_of(&runs[i]);
            let vs = if i == 1 {
                "1.00× (peer)".to_string()
            } else {
                times(paired_ratio(
                    &field(&runs[i], |s| s.throughput),
                    &field(&runs[1], |s| s.throughput),
                ))
            };
            table.row(vec![
                size(payload),
                contender.label().to_string(),
                rate(m.throughput),
                mb_per_s(m.mb_per_s),
                time_us(m.p50_us),
                time_us(m.p99_us),
                vs,
            ]);
            error_notes(&mut notes, &size(payload), contender.label(), &runs[i]);
        }
    }
    Section {
        title: format!("2. Payload sweep, concurrency {c}"),
        about: "Same processes and connections as scenario 1; the echo carries a larger body. \
                MB/s counts payload bytes (10^6) in one direction; the reply carries as many back."
            .into(),
        table,
        notes,
        goals: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: sequential round trips in one process.
//
// Each run starts its own endpoints (and scenario 4 its own node and actor): with a new
// stream per call, where the tasks of a connection land on the runtime's two workers decides
// whether a round trip needs cross-thread wake-ups, and that placement, drawn when endpoints
// start, moves a run between two latency modes. Fresh endpoints per run re-draw it each round.
