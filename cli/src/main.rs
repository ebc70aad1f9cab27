//! `colony`: look at a cluster, call its services, publish and subscribe, from a terminal.
//!
//! Each command joins the cluster as a short-lived, client-only member (it offers no service),
//! through the seeds given with `--seed` or `COLONY_SEEDS`, trusting the CA in `--ca-dir`,
//! `COLONY_HOME` or `~/.colony`, and leaves when done.
//!
//! ```text
//! colony --seed 127.0.0.1:7400 members
//! colony --seed 127.0.0.1:7400 services --json
//! colony --seed 127.0.0.1:7400 describe greeter     # instances, health, subscriptions, callers
//! colony --seed 127.0.0.1:7400 call greeter Greeter.Hello '{"name":"John"}'
//! colony --seed 127.0.0.1:7400 health               # every node; exit 0, 1 or 2
//! colony health --node 127.0.0.1:7400               # one node, e.g. as a liveness probe
//! colony --seed 127.0.0.1:7400 publish orders.created '{"id":7}'
//! colony --seed 127.0.0.1:7400 subscribe 'orders.>' --queue audit --at-least-once
//! colony --seed 127.0.0.1:7400 lock invoice-42 --ttl 10s -- ./job.sh   # token in $COLONY_LOCK_TOKEN
//! colony --seed 127.0.0.1:7400 leader scheduler --watch
//! ```
//!
//! `subscribe` prints one JSON line per event on stdout, `{"subject":"orders.created",
//! "event":{"id":7}}` (with `"attempt":n` on an at-least-once redelivery), and nothing else;
//! it runs until Ctrl-C or SIGTERM, or until `--count` events.
//!
//! Exit codes: 0 when the command did what it was asked (for `health`: every node asked is
//! healthy), 1 when it failed (for `health`: a node is degraded, has a failed service, or is
//! draining; for `publish`: a bad subject or event, or no confirmation within `--wait`; for
//! `lock`: not acquired within `--acquire`, or lost while the command ran, else the command's own
//! exit code; for `leader`: no leader), 2 when the cluster or a node asked could not be reached.

mod describe;
mod join;
mod lock;
mod publish;
mod subscribe;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Look at a colony cluster, call its services, publish and subscribe.
#[derive(Parser, Debug)]
#[command(name = "colony", version)]
struct Cli {
    /// Node to join through, host:port (repeat, or comma-separate in COLONY_SEEDS).
    #[arg(
        long = "seed",
        env = "COLONY_SEEDS",
        value_delimiter = ',',
        global = true
    )]
    seeds: Vec<String>,
    /// Cluster id to join.
    #[arg(long, env = "COLONY_CLUSTER", default_value = "colony", global = true)]
    cluster: String,
    /// Directory holding the cluster CA (ca.pem). Default: $COLONY_HOME, else ~/.colony.
    #[arg(long, global = true)]
    ca_dir: Option<std::path::PathBuf>,
    /// How long to wait for the cluster to answer, in seconds.
    #[arg(long, default_value_t = 5.0, global = true)]
    wait: f64,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the cluster's live members.
    Members,
    /// List the services offered in the cluster.
    Services,
    /// Show every instance of a service, its health and subscriptions (with their counters) on
    /// each node, and how each calling node's selector sees it (calls in flight, latency,
    /// failures, ejections).
    Describe {
        /// Service name.
        service: String,
    },
    /// Show each node's health: its services (running, degraded, restarting, failed), live
    /// instances, restarts, last failure. Exit code 0 healthy, 1 degraded or failed, 2
    /// unreachable: usable as a Kubernetes exec probe or a systemd check.
    Health {
        /// Ask only this node, host:port (repeat for several). Default: every server member.
        /// Without --seed, the nodes given are the seeds.
        #[arg(long = "node", value_delimiter = ',')]
        nodes: Vec<std::net::SocketAddr>,
    },
    /// Call an endpoint with a JSON request and print the JSON reply.
    Call {
        /// Service name.
        service: String,
        /// Endpoint, e.g. Greeter.Hello.
        endpoint: String,
        /// The request as JSON.
        request: String,
        /// Call timeout in seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Publish an event, given as JSON, to a subject; wait (within --wait) until it has left
    /// for every subscribed node and at-least-once subscribers have acknowledged it.
    Publish {
        /// Subject: dot-separated tokens, no wildcards, e.g. orders.created.
        subject: String,
        /// The event as JSON.
        event: String,
    },
    /// Subscribe to a subject pattern and print each event as one JSON line on stdout,
    /// {"subject":...,"event":...} ("attempt":n added on a redelivery), until Ctrl-C or
    /// SIGTERM.
    Subscribe {
        /// Pattern: orders.created, orders.* (one token), orders.> (the rest).
        pattern: String,
        /// Join this queue group: of its members in the cluster, one gets each event.
        #[arg(long)]
        queue: Option<String>,
        /// Acknowledge each event once printed; unacknowledged ones are redelivered (to another
        /// member of the queue group, if any). Default: at-most-once, and a terminal that
        /// cannot keep up drops its oldest events rather than slowing publishers down.
        #[arg(long)]
        at_least_once: bool,
        /// Exit after printing N events; later ones are refused (at-least-once ones go to
        /// another subscriber).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Run a command while holding a cluster-wide lock; the command gets the lock's fencing
    /// token in COLONY_LOCK_TOKEN (and the key in COLONY_LOCK_KEY). The lease is renewed while
    /// the command runs; if it is lost, the command gets SIGTERM and colony exits 1.
    Lock {
        /// The lock's key.
        key: String,
        /// Lease: renewed every third of it; at most the cluster's max (default 15s).
        #[arg(long, default_value = "10s", value_parser = lock::duration)]
        ttl: Duration,
        /// How long to wait for the lock while another holds it (0: try once).
        #[arg(long, default_value = "60s", value_parser = lock::duration)]
        acquire: Duration,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show who leads an election (exit 1 if nobody does), from gossip.
    Leader {
        /// The election's name.
        name: String,
        /// Keep printing each change until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{what} must be a positive number of seconds, not {value}"))
}

/// Exit code: a node or the cluster could not be reached.
const UNREACHABLE: u8 = 2;

/// Runs the command; `Ok` holds the exit code, `Err` a message (exit code 1).
async fn run(cli: Cli) -> Result<u8, String> {
    let wait = seconds(cli.wait, "wait")?;
    let call_timeout = match &cli.command {
        Command::Call { timeout, .. } => seconds(*timeout, "timeout")?,
        _ => Duration::from_secs(10),
    };
    // Bad input is refused before joining, so an error never skips the leave below.
    let request = match &cli.command {
        Command::Call { request, .. } => Some(
            serde_json::from_str::<serde_json::Value>(request)
                .map_err(|e| format!("the request is not valid JSON: {e}"))?,
        ),
        Command::Publish { subject, event } => {
            publish::check(subject, event)?;
            None
        }
        Command::Subscribe { pattern, .. } => {
            subscribe::check(pattern)?;
            None
        }
        _ => None,
    };
    let mut seeds = cli.seeds.clone();
    if let (true, Command::Health { nodes }) = (seeds.is_empty(), &cli.command) {
        seeds = nodes.iter().map(|n| n.to_string()).collect();
    }
    let joined = join::join(
        &seeds,
        &cli.cluster,
        cli.ca_dir.as_deref(),
        wait,
        call_timeout,
    )
    .await;
    let node = match (joined, &cli.command) {
        (Ok(node), _) => node,
        (Err(e), Command::Health { .. }) => {
            eprintln!("colony: {e}");
            return Ok(UNREACHABLE);
        }
        (Err(e), _) => return Err(e),
    };
    let result = match &cli.command {
        Command::Members => {
            let members = node.members();
            if cli.json {
                print_json(&members)
            } else {
                table::members(&members)
            }
            Ok(0)
        }
        Command::Services => {
            let registry = node.registry();
            let rows: Vec<(String, Vec<colony::ServiceInstance>)> = registry
                .services()
                .into_iter()
                .map(|s| {
                    let instances = registry.instances(&s);
                    (s, instances)
                })
                .collect();
            if cli.json {
                let json: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(s, i)| (s.clone(), serde_json::to_value(i).unwrap_or_default()))
                    .collect();
                print_json(&json)
            } else {
                table::services(&rows)
            }
            Ok(0)
        }
        Command::Describe { service } => describe::run(&node, service, wait, cli.json).await,
        Command::Health { nodes } => {
            let answers = join::health(&node, nodes, wait).await;
            if cli.json {
                print_json(&answers);
            } else {
                table::health(&answers);
            }
            Ok(health_exit_code(&answers))
        }
        Command::Call {
            service, endpoint, ..
        } => {
            let request = request.unwrap_or_default();
            join::instances_of(&node, service, wait).await;
            match node.client().call_json(service, endpoint, &request).await {
                Ok(reply) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&reply).unwrap_or_default()
                    );
                    Ok(0)
                }
                Err(e) if cli.json => {
                    print_json(&e);
                    Err(String::new())
                }
                Err(e) => Err(format!(
                    "call failed: {} {:?} ({:?}): {}",
                    u16::from(e.code()),
                    e.code(),
                    e.origin(),
                    e.detail()
                )),
            }
        }
        Command::Publish { subject, event } => {
            publish::run(&node, subject, event, wait, cli.json).await
        }
        Command::Subscribe {
            pattern,
            queue,
            at_least_once,
            count,
        } => {
            let options = subscribe::Options {
                pattern: pattern.clone(),
                queue: queue.clone(),
                at_least_once: *at_least_once,
                count: *count,
            };
            subscribe::run(&node, options).await
        }
        Command::Lock {
            key,
            ttl,
            acquire,
            command,
        } => lock::run(&node, key, *ttl, *acquire, command).await,
        Command::Leader { name, watch } => lock::leader(&node, name, *watch, cli.json).await,
    };
    node.shutdown().await;
    result
}

/// 0 if every node answered healthy, 2 if any did not answer (or none was found), else 1.
fn health_exit_code(answers: &[join::HealthAnswer]) -> u8 {
    if answers.is_empty() || answers.iter().any(|a| a.health.is_none()) {
        return UNREACHABLE;
    }
    let healthy = answers
        .iter()
        .flat_map(|a| &a.health)
        .all(|h| h.status == colony::NodeStatus::Healthy);
    u8::from(!healthy)
}

pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COLONY_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("colony: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The work runs on a worker thread, not in the runtime's entry point.
    match runtime.block_on(async { tokio::spawn(run(cli)).await }) {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(message)) => {
            if !message.is_empty() {
                eprintln!("colony: {message}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("colony: {e}");
            ExitCode::from(2)
        }
    }
}
