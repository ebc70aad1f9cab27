//! `colony`: look at a cluster and call its services from a terminal.
//!
//! Each command joins the cluster as a short-lived, client-only member (it offers no service),
//! through the seeds given with `--seed` or `COLONY_SEEDS`, trusting the CA in `--ca-dir`,
//! `COLONY_HOME` or `~/.colony`, and leaves when done.
//!
//! ```text
//! colony --seed 127.0.0.1:7400 members
//! colony --seed 127.0.0.1:7400 services --json
//! colony --seed 127.0.0.1:7400 describe greeter
//! colony --seed 127.0.0.1:7400 call greeter Greeter.Hello '{"name":"John"}'
//! colony --seed 127.0.0.1:7400 health               # every node; exit 0, 1 or 2
//! colony health --node 127.0.0.1:7400               # one node, e.g. as a liveness probe
//! ```
//!
//! Exit codes: 0 when the command did what it was asked (for `health`: every node asked is
//! healthy), 1 when it failed (for `health`: a node is degraded, has a failed service, or is
//! draining), 2 when the cluster or a node asked could not be reached.

mod join;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Look at a colony cluster and call its services.
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
    /// Show every instance of a service, and how each calling node's selector sees them
    /// (calls in flight, latency, failures, ejections).
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
        Command::Describe { service } => {
            let instances = join::instances_of(&node, service, wait).await;
            // Failed services are withdrawn from gossip, but their nodes still report them.
            let health: Vec<_> = join::health(&node, &[], wait)
                .await
                .into_iter()
                .filter_map(|a| {
                    let h = a.health?;
                    let row = h.services.into_iter().find(|s| &s.name == service)?;
                    Some((h.node, row))
                })
                .collect();
            if instances.is_empty() && health.is_empty() {
                Err(format!("no instance of service {service} in the cluster"))
            } else {
                let callers = join::selector_views(&node, service).await;
                if cli.json {
                    let health: Vec<_> = health
                        .iter()
                        .map(|(node, h)| serde_json::json!({"node": node, "health": h}))
                        .collect();
                    print_json(&serde_json::json!({
                        "instances": instances,
                        "health": health,
                        "callers": callers,
                    }))
                } else {
                    table::instances(&instances);
                    if !health.is_empty() {
                        println!();
                        table::service_health(&health);
                    }
                    if !callers.is_empty() {
                        println!();
                        table::selectors(&callers);
                    }
                }
                Ok(0)
            }
        }
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

fn print_json<T: serde::Serialize>(value: &T) {
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
