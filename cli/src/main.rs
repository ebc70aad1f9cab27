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
//! ```

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

async fn run(cli: Cli) -> Result<(), String> {
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
    let node = join::join(
        &cli.seeds,
        &cli.cluster,
        cli.ca_dir.as_deref(),
        wait,
        call_timeout,
    )
    .await?;
    let result = match &cli.command {
        Command::Members => {
            let members = node.members();
            if cli.json {
                print_json(&members)
            } else {
                table::members(&members)
            }
            Ok(())
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
            Ok(())
        }
        Command::Describe { service } => {
            let instances = join::instances_of(&node, service, wait).await;
            if instances.is_empty() {
                Err(format!("no instance of service {service} in the cluster"))
            } else {
                let callers = join::selector_views(&node, service).await;
                if cli.json {
                    print_json(&serde_json::json!({
                        "instances": instances,
                        "callers": callers,
                    }))
                } else {
                    table::instances(&instances);
                    if !callers.is_empty() {
                        println!();
                        table::selectors(&callers);
                    }
                }
                Ok(())
            }
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
                    Ok(())
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
        Ok(Ok(())) => ExitCode::SUCCESS,
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
