//! `colony-bench`: colony measured side by side with its peers, in the same run.
//!
//! ```text
//! cargo run --release -p colony-bench -- all        # every scenario (default ~6 min)
//! cargo run --release -p colony-bench -- rpc        # unary RPC, 2 processes, vs tonic
//! cargo run --release -p colony-bench -- sweep      # payload sweep, vs tonic+TLS
//! cargo run --release -p colony-bench -- seq        # sequential round trip, vs raw quinn
//! cargo run --release -p colony-bench -- local      # in-process call, vs raw ractor
//! cargo run --release -p colony-bench -- gossip     # membership convergence and traffic
//! cargo run --release -p colony-bench -- pick       # selector pick cost, ns per pick
//! cargo run --release -p colony-bench -- resilience # 3 servers, one failing or killed, vs tonic
//! cargo run --release -p colony-bench -- actors     # idle instance memory, vs raw ractor
//! cargo run --release -p colony-bench -- supervision # restart after a panic, full mailboxes, vs raw ractor
//! cargo run --release -p colony-bench -- pubsub     # publish/subscribe, colony's broker vs NATS core
//! cargo run --release -p colony-bench --features etcd -- locks # distributed locks, vs etcd
//!   options: --duration 3s --warmup 500ms --rounds 2 --instances 64 --concurrency 1,64,256
//!            --by-name round-robin,p2c --fleet-concurrency 64 --faults none,failing,kill
//!            --panics 200 --default-panics 50 --callers 16 --mailbox 1024 --flood-cap-mb 1000
//!            --subscribers 3 --rate 10000 --publishers 1 --nats-publishers 1
//!            --lock-pairs 1000 --lock-warmup-pairs 100 --lock-clients 16 --lock-keys 3
//!            --lock-ttl 2s --lock-max-ttl 2s --lock-wait 10s --etcd-dir /dev/shm
//! ```
//!
//! The report (markdown) goes to stdout, progress to stderr. See `docs/benchmarks.md`.
//!
//! The `etcd` cargo feature builds the etcd columns of `locks` (etcd-client, whose build needs
//! `protoc`: `apt-get install protobuf-compiler`; at run time `etcd` on PATH: `apt-get install
//! etcd-server`). Without it, `locks` (and `all`) measure colony's locks alone and say how to
//! get the etcd columns; with it but without an `etcd` binary, the etcd columns are skipped.

mod broker_side;
mod certs;
mod child;
mod colony_side;
#[cfg(feature = "etcd")]
mod etcd_side;
mod fault;
mod fleet;
mod gossip;
mod load;
mod local;
mod lock_side;
mod locker;
mod nats_side;
mod netstat;
mod pick_cost;
mod publish;
mod raw_quinn;
mod raw_supervisor;
mod scenarios;
mod stats;
mod sub_child;
mod table;
mod tally;
mod tick;
mod tonic_side;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use colony::Strategy;

use crate::certs::BoxError;
use crate::child::{ServeOptions, ServerKind};
use crate::scenarios::{
    LockArgs, LockSettings, PubSubSettings, RemoteEnv, Section, Settings, SupervisionSettings,
};
use crate::sub_child::SubscribeArgs;

/// Benchmarks colony against tonic gRPC, raw quinn and raw ractor, in the same run.
#[derive(Debug, Parser)]
#[command(name = "colony-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Unary RPC between two processes: colony vs tonic+TLS (and tonic in clear).
    Rpc(RunArgs),
    /// Payload sweep (100 B, 10 KB, 1 MB): colony vs tonic+TLS.
    Sweep(RunArgs),
    /// Sequential round trip in one process: colony vs raw quinn loops.
    Seq(RunArgs),
    /// In-process call: colony's local fast path vs a raw ractor actor.
    Local(RunArgs),
    /// Membership: convergence, failure detection and gossip traffic at several cluster sizes.
    Gossip(GossipArgs),
    /// The selector's pick: ns per pick of each strategy, over 3 and 16 instances.
    Pick(RunArgs),
    /// Three servers called by name, one failing every call or killed mid-load: colony
    /// (idempotent, retries) vs tonic+TLS balanced over three servers.
    Resilience(RunArgs),
    /// Idle instances: resident bytes and spawn time per instance, colony vs raw ractor. Not
    /// part of `all`: it reads the whole process's RSS, so it runs on its own.
    Actors(ActorsArgs),
    /// A service whose one instance panics (restart latency) or is stuck with a full mailbox
    /// (refused calls, memory), colony vs a hand-written raw ractor supervisor and actor.
    Supervision(RunArgs),
    /// Publish/subscribe, 1→1, fan-out and queue group across processes: colony's broker
    /// (at-most-once and at-least-once) vs NATS core (a `nats-server` the bench starts).
    Pubsub(RunArgs),
    /// Distributed locks, uncontended and contended: colony's lock service (3 server
    /// processes) vs etcd (an `etcd` the bench starts; needs the `etcd` cargo feature).
    Locks(RunArgs),
    /// Every scenario, in the order rpc, sweep, seq, local, pick, resilience, supervision,
    /// pubsub, locks.
    All(RunArgs),
    /// Internal: serve one system in a child process until stdin closes.
    #[command(hide = true)]
    Serve(ServeArgs),
    /// Internal: one pub/sub subscriber in a child process, until stdin closes.
    #[command(hide = true)]
    Subscribe(SubscribeArgs),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Measured window per cell and round (e.g. `3`, `3s`, `500ms`).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before each measured window.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    warmup: Duration,
    /// Runs of each cell per system; systems alternate A B C, C B A, ...
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Instances (actors) of colony's echo service in the server process. Several values
    /// (`8,64`) run one colony server each in the rpc scenario; the first decides the goals.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    instances: Vec<usize>,
    /// Concurrency levels of the unary RPC scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    concurrency: Vec<usize>,
    /// Payload of the RPC, sequential and local scenarios, in bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Payloads of the sweep, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,10000,1000000")]
    sizes: Vec<usize>,
    /// Concurrency of the sweep.
    #[arg(long, default_value_t = 16)]
    sweep_concurrency: usize,
    /// Run only the systems whose label contains this text, e.g. `colony` (for profiling).
    #[arg(long)]
    only: Option<String>,
    /// Strategies of the extra colony clients calling by name in the rpc scenario (`none`
    /// for no such client).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "round-robin,p2c"
    )]
    by_name: Vec<StrategyArg>,
    /// Concurrency of the resilience scenario.
    #[arg(long, default_value_t = 64)]
    fleet_concurrency: usize,
    /// Faults of the resilience scenario: `none` (baseline), `failing` (1 of 3 servers fails
    /// every call), `kill` (1 of 3 killed with SIGKILL mid-run).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,failing,kill"
    )]
    faults: Vec<fault::Fault>,
    /// Panics per system in the supervision scenario's restart table (split over `--rounds`).
    #[arg(long, default_value_t = 200)]
    panics: usize,
    /// Panics under colony's default restart policy, each on a fresh service.
    #[arg(long, default_value_t = 50)]
    default_panics: usize,
    /// Tasks calling the stuck service in the full-mailbox table (window: `--duration`).
    #[arg(long, default_value_t = 16)]
    callers: usize,
    /// Mailbox capacity of colony's stuck instance.
    #[arg(long, default_value_t = 1024)]
    mailbox: usize,
    /// The raw ractor flood stops once the process's resident set has grown this much (MB).
    #[arg(long, default_value_t = 1000)]
    flood_cap_mb: u64,
    /// Subscriber processes of the pub/sub fan-out and queue-group cells.
    #[arg(long, default_value_t = 3)]
    subscribers: usize,
    /// Events per second of the pub/sub latency runs (paced).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// colony's publishing tasks in the pub/sub throughput runs (each awaits every publish).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// NATS publishing tasks in the pub/sub throughput runs.
    #[arg(long, default_value_t = 1)]
    nats_publishers: usize,
    /// The locks scenario's own options.
    #[command(flatten)]
    locks: LockArgs,
}

/// A strategy named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    /// `Strategy::RoundRobin`.
    RoundRobin,
    /// `Strategy::PowerOfTwoChoices`, the default.
    P2c,
    /// `Strategy::Random`.
    Random,
    /// `Strategy::LeastOutstanding`.
    LeastOutstanding,
    /// No strategy (no by-name client).
    None,
}

impl StrategyArg {
    fn strategy(self) -> Option<Strategy> {
        match self {
            StrategyArg::RoundRobin => Some(Strategy::RoundRobin),
            StrategyArg::P2c => Some(Strategy::PowerOfTwoChoices),
            StrategyArg::Random => Some(Strategy::Random),
            StrategyArg::LeastOutstanding => Some(Strategy::LeastOutstanding),
            StrategyArg::None => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
struct GossipArgs {
    /// Cluster sizes to measure (nodes in one process).
    #[arg(long, value_delimiter = ',', default_value = "3,32")]
    nodes: Vec<usize>,
    /// Steady window over which gossip traffic is counted.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    steady: Duration,
}

#[derive(Debug, Clone, Args)]
struct ActorsArgs {
    /// Idle actors of each system (and colony instances in each row).
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Also spread the same number of instances over this many services (0 or 1: skip).
    #[arg(long, default_value_t = 1_000)]
    spread: usize,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The system to serve.
    #[arg(value_enum)]
    kind: ServerKind,
    /// Directory holding the certificates written by the parent.
    #[arg(long)]
    dir: PathBuf,
    /// Instances of colony's echo service.
    #[arg(long, default_value_t = 64)]
    instances: usize,
    /// The colony node's name.
    #[arg(long, default_value = child::DEFAULT_NAME)]
    name: String,
    /// A colony node to join.
    #[arg(long)]
    seed: Option<std::net::SocketAddr>,
    /// Answer every call with "unavailable" (a broken server).
    #[arg(long)]
    fail: bool,
    /// colony's `lock_max_ttl` on this node (the locks scenario).
    #[arg(long, value_parser = parse_duration)]
    lock_max_ttl: Option<Duration>,
}

impl From<&ServeArgs> for ServeOptions {
    fn from(a: &ServeArgs) -> Self {
        ServeOptions {
            instances: a.instances,
            name: a.name.clone(),
            seed: a.seed,
            fail: a.fail,
            lock_max_ttl: a.lock_max_ttl,
        }
    }
}

/// Parses `3`, `2.5`, `3s`, `500ms` into a duration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 3s or 500ms)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Scenarios {
    rpc: bool,
    sweep: bool,
    seq: bool,
    local: bool,
    pick: bool,
    resilience: bool,
    supervision: bool,
    pubsub: bool,
    locks: bool,
}

impl Command {
    fn scenarios(&self) -> Scenarios {
        let none = Scenarios::default();
        match self {
            Command::Rpc(_) => Scenarios { rpc: true, ..none },
            Command::Sweep(_) => Scenarios {
                sweep: true,
                ..none
            },
            Command::Seq(_) => Scenarios { seq: true, ..none },
            Command::Local(_) => Scenarios {
                local: true,
                ..none
            },
            Command::Pick(_) => Scenarios { pick: true, ..none },
            Command::Resilience(_) => Scenarios {
                resilience: true,
                ..none
            },
            Command::Supervision(_) => Scenarios {
                supervision: true,
                ..none
            },
            Command::Pubsub(_) => Scenarios {
                pubsub: true,
                ..none
            },
            Command::Locks(_) => Scenarios {
                locks: true,
                ..none
            },
            Command::All(_) => Scenarios {
                rpc: true,
                sweep: true,
                seq: true,
                local: true,
                pick: true,
                resilience: true,
                supervision: true,
                pubsub: true,
                locks: true,
            },
            Command::Serve(_) | Command::Subscribe(_) | Command::Gossip(_) | Command::Actors(_) => {
                none
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Command::Rpc(_) => "rpc",
            Command::Sweep(_) => "sweep",
            Command::Seq(_) => "seq",
            Command::Local(_) => "local",
            Command::Pick(_) => "pick",
            Command::Resilience(_) => "resilience",
            Command::Supervision(_) => "supervision",
            Command::Pubsub(_) => "pubsub",
            Command::Locks(_) => "locks",
            Command::All(_) => "all",
            Command::Gossip(_) => "gossip",
            Command::Actors(_) => "actors",
            Command::Serve(_) => "serve",
            Command::Subscribe(_) => "subscribe",
        }
    }
}

impl From<&RunArgs> for Settings {
    fn from(a: &RunArgs) -> Self {
        Settings {
            warmup: a.warmup,
            duration: a.duration,
            rounds: usize::try_from(a.rounds).unwrap_or(usize::MAX),
            instances: if a.instances.is_empty() {
                vec![64]
            } else {
                a.instances.iter().map(|&n| n.max(1)).collect()
            },
            concurrency: a.concurrency.clone(),
            payload: a.payload,
            sweep_sizes: a.sizes.clone(),
            sweep_concurrency: a.sweep_concurrency.max(1),
            only: a.only.clone(),
            by_name: a.by_name.iter().filter_map(|s| s.strategy()).collect(),
            fleet_concurrency: a.fleet_concurrency.max(1),
            faults: a.faults.clone(),
        }
    }
}

impl From<&RunArgs> for SupervisionSettings {
    fn from(a: &RunArgs) -> Self {
        SupervisionSettings {
            panics: a.panics.max(1),
            default_panics: a.default_panics,
            rounds: usize::try_from(a.rounds).unwrap_or(usize::MAX),
            window: a.duration,
            callers: a.callers.max(1),
            mailbox: a.mailbox.max(1),
            cap_bytes: a.flood_cap_mb.saturating_mul(1_000_000),
        }
    }
}

impl From<&RunArgs> for LockSettings {
    fn from(a: &RunArgs) -> Self {
        LockSettings {
            warmup: a.warmup,
            duration: a.duration,
            rounds: usize::try_from(a.rounds).unwrap_or(usize::MAX),
            pairs: a.locks.lock_pairs.max(1),
            warmup_pairs: a.locks.lock_warmup_pairs,
            clients: a.locks.lock_clients.max(1),
            keys: a.locks.lock_keys.max(1),
            ttl: a.locks.lock_ttl,
            max_ttl: a.locks.lock_max_ttl,
            wait: a.locks.lock_wait,
            etcd_dir: a.locks.etcd_dir.clone(),
            only: a.only.clone(),
        }
    }
}

impl From<&RunArgs> for PubSubSettings {
    fn from(a: &RunArgs) -> Self {
        PubSubSettings {
            warmup: a.warmup,
            duration: a.duration,
            rounds: usize::try_from(a.rounds).unwrap_or(usize::MAX),
            payload: a.payload,
            subscribers: a.subscribers.max(1),
            rate: a.rate.max(1),
            colony_publishers: a.publishers.max(1),
            nats_publishers: a.nats_publishers.max(1),
            only: a.only.clone(),
        }
    }
}

fn header(command: &str, s: &Settings) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "# colony-bench {command}\n\n\
         {cpus} CPUs available; release build. Each cell: {:?} warm-up then {:?} measured, \
         {} round(s) per system, systems alternating (A B C, C B A, ...). Figures are medians \
         across rounds; ratios are medians of same-round ratios. colony's echo service runs {} \
         instance(s) per server process in scenarios 1, 2 and 6, one in scenarios 3-4.\n",
        s.warmup,
        s.duration,
        s.rounds,
        s.instances
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    let args = match &cli.command {
        Command::Serve(serve) => {
            return child::serve(serve.kind, &serve.dir, &ServeOptions::from(serve)).await;
        }
        Command::Subscribe(sub) => return sub_child::serve(sub).await,
        Command::Gossip(g) => {
            let section = gossip::run(&g.nodes, g.steady).await;
            println!("# colony-bench gossip\n\n{}", section.to_markdown());
            return Ok(());
        }
        Command::Actors(a) => {
            let section = scenarios::idle(a.count, a.spread).await?;
            println!("# colony-bench actors\n\n{}", section.to_markdown());
            return Ok(());
        }
        Command::Rpc(a)
        | Command::Sweep(a)
        | Command::Seq(a)
        | Command::Local(a)
        | Command::Pick(a)
        | Command::Resilience(a)
        | Command::Supervision(a)
        | Command::Pubsub(a)
        | Command::Locks(a)
        | Command::All(a) => a,
    };
    let settings = Settings::from(args);
    let which = cli.command.scenarios();
    let mut sections: Vec<Section> = Vec::new();
    if which.rpc || which.sweep {
        let env = RemoteEnv::start(&settings).await?;
        if which.rpc {
            sections.push(scenarios::rpc(&env, &settings).await);
        }
        if which.sweep {
            sections.push(scenarios::sweep(&env, &settings).await);
        }
        env.stop().await;
    }
    if which.seq {
        sections.push(scenarios::sequential(&settings).await?);
    }
    if which.local {
        sections.push(scenarios::local(&settings).await?);
    }
    if which.pick {
        sections.push(pick_cost::run(&settings).await);
    }
    if which.resilience {
        sections.push(scenarios::resilience(&settings).await?);
    }
    if which.supervision {
        let supervision = SupervisionSettings::from(args);
        sections.push(scenarios::restart(&supervision).await?);
        sections.push(scenarios::full_mailbox(&supervision).await?);
    }
    if which.pubsub {
        sections.extend(scenarios::pubsub(&PubSubSettings::from(args)).await?);
    }
    if which.locks {
        sections.extend(scenarios::locks(&LockSettings::from(args)).await?);
    }

    let mut report = header(cli.command.name(), &settings);
    for section in &sections {
        report.push('\n');
        report.push_str(&section.to_markdown());
    }
    let goals: Vec<_> = sections.iter().flat_map(|s| s.goals.clone()).collect();
    if !goals.is_empty() {
        report.push_str("\n## Goals (targets, not assertions)\n\n");
        report.push_str(&table::goals_table(&goals));
    }
    println!("{report}");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything runs in a spawned task: the body of `#[tokio::main]` is not a worker thread.
    match tokio::spawn(run(cli)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("colony-bench: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("colony-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
