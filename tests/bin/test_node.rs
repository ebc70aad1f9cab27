//! `colony-test-node`: a node in its own process, for the multi-process tests.
//!
//! ```text
//! colony-test-node --ca-dir DIR [--name NAME] [--listen ADDR] [--seed ADDR]... [--service NAME]...
//!                  [--unavailable] [--subscribe SPEC]... [--ack-wait-ms MS] [--handle-delay-ms MS]
//!                  [--record-dir DIR]
//! ```
//!
//! Starts a node on `127.0.0.1:0` trusting the CA in `DIR/ca.pem` (joining the cluster through
//! the seeds), runs the fixture service as `fixture` (2 instances) and under every `--service`
//! name, and the `inspect` service that reports this node's registry view; prints `LISTENING <addr>` on stdout, and serves until its stdin closes
//! or it gets SIGTERM or SIGINT (then shuts down gracefully with `Node::shutdown` and exits 0), or
//! it is killed.
//!
//! Meanwhile it reads commands on stdin, one a line, and acknowledges each on stdout (flushed)
//! once done ([`ChildNode::command`](colony_tests::ChildNode::command) sends them):
//!
//! ```text
//! cut ADDR [ADDR...]   Node::cut_off: drop all traffic to and from these peers   -> CUT
//! restore              Node::restore: traffic flows again                         -> RESTORED
//! ```
//!
//! A line it does not understand is reported on stderr and ignored.
//!
//! With `--unavailable`, `fixture` and the `--service` names advertise the fixture's endpoints
//! but their handlers answer every call with `Unavailable` (origin `Handler`): an instance that
//! is up, reachable and useless, for outlier ejection tests.
//!
//! Each `--subscribe <service>:<pattern>[:<queue>][:alo]` runs a
//! [`Recorder`](colony_tests::Recorder) service that subscribes to [`Job`](colony_tests::Job)s
//! (in queue group `<queue>` if given, at-least-once with `alo`) and answers
//! [`Received`](colony_tests::Received) with what it handled. At-least-once subscriptions
//! redeliver after `--ack-wait-ms` (default 30 s: colony's), backoff from 50 ms, at most 10
//! attempts. Every event takes `--handle-delay-ms` to handle (default 0); with `--record-dir`,
//! each handled event is also appended to a file there (see `colony_tests::record_file`), which
//! survives a `kill -9`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use colony::{Context, Error, Handler, Node, Redelivery};
use colony_tests::{
    fixture_endpoints, init_tracing, start_fixture, start_recorder, Blob, Count, Echo, Fail, Hold,
    HoldBig, Inspect, Inspector, Panic, RecorderOptions, Sleep, SubscribeSpec, FIXTURE, INSPECT,
};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};

fn usage() -> ! {
    eprintln!(
        "usage: colony-test-node --ca-dir DIR [--name NAME] [--listen ADDR] [--seed ADDR]... \
         [--service NAME]... [--unavailable] [--subscribe SERVICE:PATTERN[:QUEUE][:alo]]... \
         [--ack-wait-ms MS] [--handle-delay-ms MS] [--record-dir DIR]"
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut ca_dir: Option<PathBuf> = None;
    let mut name = format!("child-{}", std::process::id());
    let mut seeds = Vec::new();
    let mut listen = "127.0.0.1:0".to_string();
    let mut services = Vec::new();
    let mut unavailable = false;
    let mut subscriptions = Vec::new();
    let mut ack_wait: Option<Duration> = None;
    let mut recorder = RecorderOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ca-dir" => ca_dir = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--name" => name = args.next().unwrap_or_else(|| usage()),
            "--seed" => seeds.push(args.next().unwrap_or_else(|| usage())),
            "--listen" => listen = args.next().unwrap_or_else(|| usage()),
            "--service" => services.push(args.next().unwrap_or_else(|| usage())),
            "--unavailable" => unavailable = true,
            "--subscribe" => {
                let spec = args.next().unwrap_or_else(|| usage());
                subscriptions.push(SubscribeSpec::parse(&spec).unwrap_or_else(|e| {
                    eprintln!("colony-test-node: {e}");
                    usage()
                }));
            }
            "--ack-wait-ms" => ack_wait = Some(Duration::from_millis(millis(args.next()))),
            "--handle-delay-ms" => recorder.delay = Duration::from_millis(millis(args.next())),
            "--record-dir" => {
                recorder.record_dir = Some(args.next().unwrap_or_else(|| usage()).into())
            }
            _ => usage(),
        }
    }
    let Some(ca_dir) = ca_dir else { usage() };
    if let Some(ack_wait) = ack_wait {
        recorder.redelivery = Some(Redelivery {
            ack_wait,
            max_attempts: 10,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
        });
    }
    init_tracing();
    // The tests make handlers panic on purpose: one line on stderr is enough.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("colony-test-node: {info}");
    }));

    let node = Node::builder()
        .name(name.clone())
        .listen(listen)
        .ca_dir(ca_dir)
        .seeds(seeds)
        .start()
        .await
        .unwrap_or_else(|e| {
            eprintln!("colony-test-node: {e}");
            std::process::exit(1);
        });
    if unavailable {
        start_refuser(&node, FIXTURE, 2).await;
        for service in &services {
            start_refuser(&node, service, 1).await;
        }
    } else {
        start_fixture(&node, FIXTURE, 2).await;
        for service in &services {
            start_fixture(&node, service, 1).await;
        }
    }
    for spec in &subscriptions {
        start_recorder(&node, spec, &recorder)
            .await
            .unwrap_or_else(|e| panic!("subscriber {spec:?} starts: {e}"));
    }
    let inspector = Inspector {
        node: name.clone(),
        registry: node.registry().clone(),
    };
    node.service(INSPECT)
        .handler::<Inspect>()
        .spawn(move || inspector.clone())
        .await
        .expect("inspect service starts");

    // Installed before the address is printed: a test may send SIGTERM as soon as it reads it.
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {}", node.addr()).expect("write stdout");
        out.flush().expect("flush stdout");
    }

    // Serve (and obey the commands on stdin) until stdin reaches end of file (the test dropped
    // its end, or died) or a signal asks to stop.
    let why = tokio::select! {
        () = serve_commands(&node) => "stdin closed",
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    eprintln!("colony-test-node {name}: {why}; shutting down");
    node.shutdown().await;
    eprintln!("colony-test-node {name}: stopped");
    // Not a return from main: the runtime would wait for the blocking read of stdin, which
    // cannot be cancelled, when the process stops on a signal with its stdin still open.
    std::process::exit(0);
}

/// A flag's value in milliseconds.
fn millis(arg: Option<String>) -> u64 {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage())
}

/// Runs the commands read on stdin, one a line (see the top of this file); returns once stdin
/// reaches end of file (or fails).
async fn serve_commands(node: &Node) {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => run_command(node, String::from_utf8_lossy(&line).trim()),
        }
    }
}

/// Runs one command line, or reports on stderr that it is not one.
fn run_command(node: &Node, line: &str) {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("cut") => match words
            .map(str::parse)
            .collect::<Result<Vec<SocketAddr>, _>>()
        {
            Ok(peers) if !peers.is_empty() => {
                node.cut_off(peers);
                acknowledge("CUT");
            }
            _ => eprintln!("colony-test-node: ignored {line:?}: expected cut ADDR [ADDR...]"),
        },
        Some("restore") if words.next().is_none() => {
            node.restore();
            acknowledge("RESTORED");
        }
        _ => eprintln!("colony-test-node: ignored unknown command {line:?}"),
    }
}

/// Prints `ack` on its own line on stdout, flushed: the test is waiting for it.
fn acknowledge(ack: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ack}").expect("write stdout");
    out.flush().expect("flush stdout");
}

/// Answers every fixture message with `Unavailable` (`--unavailable`).
#[derive(Clone)]
struct Refuser {
    node: String,
}

macro_rules! refuse {
    ($($message:ty),*) => {$(
        impl Handler<$message> for Refuser {
            async fn handle(
                &mut self,
                _req: $message,
                _ctx: &Context,
            ) -> Result<<$message as colony::Message>::Reply, Error> {
                Err(Error::unavailable(format!("{} refuses every call", self.node)))
            }
        }
    )*};
}

refuse!(Echo, Fail, Sleep, Hold, HoldBig, Panic, Count, Blob);

/// Runs a service under `name` with the fixture's endpoints, all answered by [`Refuser`].
async fn start_refuser(node: &Node, name: &str, instances: usize) {
    let refuser = Refuser {
        node: node.name().to_string(),
    };
    fixture_endpoints(node.service(name).version("1.0.0").instances(instances))
        .spawn(move || refuser.clone())
        .await
        .expect("refusing service starts");
}
