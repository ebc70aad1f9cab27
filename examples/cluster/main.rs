//! A three-node cluster in three OS processes, found by gossip, called by service name.
//!
//! ```text
//! cargo run --release --example cluster            # the whole demo
//! cargo run --release --example cluster -- node --name a --listen 127.0.0.1:7400
//! cargo run --release --example cluster -- node --name b --listen 127.0.0.1:7401 --seed 127.0.0.1:7400
//! ```
//!
//! The demo starts this same binary three times as `node` children (a greeter service on each),
//! joins the cluster itself as a client-only member, calls `greeter` by name (the selector
//! spreads the calls over the nodes), then kills one node with SIGKILL *while 16 callers keep
//! calling*: idempotent calls that hit the dead node are retried on a live one, so no call fails.
//! It shows how long until the node is out of the view and what the client's selector saw,
//! restarts the node and watches it rejoin. Trust is the per-user CA in `~/.colony` /
//! `$COLONY_HOME`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use colony::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct HelloReply {
    greeting: String,
    node: String,
}

impl Message for Hello {
    type Reply = HelloReply;
    const ENDPOINT: &'static str = "Greeter.Hello";
}

struct Greeter {
    node: String,
}

impl Handler<Hello> for Greeter {
    async fn handle(&mut self, req: Hello, _ctx: &Context) -> Result<HelloReply, Error> {
        Ok(HelloReply {
            greeting: format!("Hello, {}!", req.name),
            node: self.node.clone(),
        })
    }
}

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node serving `greeter` until interrupted.
    Node {
        /// Node name (stable across restarts).
        #[arg(long)]
        name: String,
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Nodes to join through.
        #[arg(long = "seed")]
        seeds: Vec<String>,
        /// Stop when standard input closes (set by the demo, so children die with it).
        #[arg(long)]
        stdin_lifeline: bool,
    },
}

async fn serve(
    name: String,
    listen: String,
    seeds: Vec<String>,
    stdin_lifeline: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let node = Node::builder()
        .name(name.clone())
        .listen(listen)
        .seeds(seeds)
        .start()
        .await?;
    node.service("greeter")
        .version("1.0.0")
        .instances(2)
        .handler::<Hello>()
        .spawn(move || Greeter { node: name.clone() })
        .await?;
    // The parent reads this line to learn the address.
    println!("LISTENING {}", node.addr());
    let parent_gone = async {
        if !stdin_lifeline {
            return std::future::pending().await;
        }
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = parent_gone => {}
    }
    node.shutdown().await;
    Ok(())
}

/// A child node process, killed with the demo.
struct NodeProcess {
    name: String,
    child: Child,
    addr: SocketAddr,
}

impl NodeProcess {
    fn start(name: &str, listen: &str, seed: Option<SocketAddr>) -> std::io::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "node",
            "--name",
            name,
            "--listen",
            listen,
            "--stdin-lifeline",
        ]);
        if let Some(seed) = seed {
            cmd.args(["--seed", &seed.to_string()]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("node {name} did not start: {line:?}")))?;
        Ok(Self {
            name: name.to_string(),
            child,
            addr,
        })
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Callers looping on `greeter` until stopped, counting answers, failures and the slowest call.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Duration)>>,
}

impl Load {
    fn start(node: &Node, callers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let tasks = (0..callers)
            .map(|c| {
                let client = node.client();
                let (stop, done) = (stop.clone(), done.clone());
                tokio::spawn(async move {
                    let (mut failed, mut slowest) = (0, Duration::ZERO);
                    // Bounded: a demo never loops forever.
                    for i in 0..1_000_000u64 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let hello = Hello {
                            name: format!("caller-{c}-{i}"),
                        };
                        let t = Instant::now();
                        let outcome = client
                            .request("greeter", hello)
                            .idempotent()
                            .retries(3)
                            .timeout(Duration::from_secs(5))
                            .await;
                        slowest = slowest.max(t.elapsed());
                        match outcome {
                            Ok(_) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failed += 1;
                                eprintln!("  call failed: {e}");
                            }
                        }
                    }
                    (failed, slowest)
                })
            })
            .collect();
        Self { stop, done, tasks }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    async fn wait_for(&self, calls: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.done() < calls && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut failed, mut slowest) = (0, Duration::ZERO);
        let done = self.done();
        for task in self.tasks {
            if let Ok((f, s)) = task.await {
                failed += f;
                slowest = slowest.max(s);
            }
        }
        (done.max(self.done.load(Ordering::Relaxed)), failed, slowest)
    }
}

async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let first = NodeProcess::start("node-1", "127.0.0.1:0", None)?;
    let seed = first.addr;
    let mut nodes = vec![
        first,
        NodeProcess::start("node-2", "127.0.0.1:0", Some(seed))?,
        NodeProcess::start("node-3", "127.0.0.1:0", Some(seed))?,
    ];
    for n in &nodes {
        println!("started {} (pid {}) at {}", n.name, n.child.id(), n.addr);
    }
    let me = Node::builder()
        .name("demo-client")
        .seeds([seed.to_string()])
        .client_only()
        .start()
        .await?;
    let registry = me.registry().clone();
    let t = Instant::now();
    registry
        .wait_until(Duration::from_secs(15), |r| {
            r.instances("greeter").len() == 3
        })
        .await;
    println!(
        "\nall 3 greeter instances visible after {:?}: {:?}",
        t.elapsed(),
        registry
            .instances("greeter")
            .iter()
            .map(|i| &i.id)
            .collect::<Vec<_>>()
    );

    println!("\ncalling greeter by name six times:");
    for i in 0..6 {
        let reply = me
            .client()
            .call(
                "greeter",
                Hello {
                    name: format!("caller-{i}"),
                },
            )
            .await?;
        println!("  {} (answered by {})", reply.greeting, reply.node);
    }

    println!("\n16 callers call greeter by name (idempotent, up to 3 retries)...");
    let load = Load::start(&me, 16);
    load.wait_for(2_000).await;
    let victim = nodes.pop().expect("three nodes");
    println!(
        "kill -9 {} (pid {}) under load",
        victim.name,
        victim.child.id()
    );
    let killed = Instant::now();
    drop(victim);
    registry
        .wait_until(Duration::from_secs(15), |r| {
            r.instances("greeter").len() == 2
        })
        .await;
    println!("node-3 out of the view after {:?}", killed.elapsed());
    let done_at_kill = load.done();
    load.wait_for(done_at_kill + 2_000).await;
    let (done, failed, slowest) = load.stop().await;
    println!(
        "calls: {done} answered, {failed} failed; slowest call {slowest:?} (the dead node cost \
         one short attempt, then a retry elsewhere)"
    );
    println!("\nthe client's selector for greeter:");
    for i in me.client().instance_report("greeter").await {
        println!(
            "  {:<16} {:<8} calls={:<6} failed={:<4} latency={:>6}us ejections={}",
            i.id,
            i.health,
            i.calls,
            i.failures,
            i.latency_us.unwrap_or(0),
            i.ejections
        );
    }

    println!("\nrestarting node-3");
    let restarted = Instant::now();
    nodes.push(NodeProcess::start("node-3", "127.0.0.1:0", Some(seed))?);
    registry
        .wait_until(Duration::from_secs(15), |r| {
            r.instances("greeter").len() == 3
        })
        .await;
    println!("node-3 back in the view after {:?}", restarted.elapsed());
    println!("\nmembers as seen by the demo client:");
    for m in me.members() {
        println!(
            "  {:<12} {:<22} {:?} services={:?}",
            m.name, m.addr, m.role, m.services
        );
    }
    me.shutdown().await;
    drop(nodes);
    println!("\ndone: children stopped");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    colony_examples::init_tracing("warn");
    match Args::parse().command {
        Some(Cmd::Node {
            name,
            listen,
            seeds,
            stdin_lifeline,
        }) => tokio::spawn(serve(name, listen, seeds, stdin_lifeline)).await?,
        None => tokio::spawn(demo()).await?,
    }
}
