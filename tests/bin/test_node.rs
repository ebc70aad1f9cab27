//! `colony-test-node`: a node in its own process, for the multi-process tests.
//!
//! ```text
//! colony-test-node --ca-dir DIR [--name NAME] [--listen ADDR] [--seed ADDR]... [--service NAME]...
//!                  [--unavailable] [--subscribe SPEC]... [--ack-wait-ms MS] [--handle-delay-ms MS]
//!                  [--record-dir DIR] [--lock-max-ttl-ms MS] [--fence ADDR]
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
//! members              the live members this node sees           -> MEMBERS NAME... (sorted)
//! lock KEY TTL_MS WAIT_MS
//!                      node.lock(KEY).ttl(TTL).wait(WAIT); the guard is kept by key (replacing,
//!                      and so releasing, an earlier one)
//!                                          -> LOCKED KEY TOKEN | REFUSED KEY CODE DETAIL...
//! write KEY            writes Single to the fence with the kept guard's token, whether or not
//!                      its lease still runs (that is the point of fencing)
//!                      -> WRITE KEY accepted | rejected | none (no guard) | failed CODE DETAIL...
//! held KEY             LockGuard::is_held                       -> HELD KEY true|false
//! release KEY          LockGuard::release                       -> RELEASED KEY ok|none|CODE
//! elect NAME TTL_MS    campaigns (node.elect(NAME).ttl(TTL))    -> CAMPAIGNING NAME at once;
//!                      later LEADING NAME TOKEN once elected, DEPOSED NAME TOKEN when its
//!                      lost() fires, ELECTION NAME failed CODE if the campaign fails
//! leader NAME          node.leader_of(NAME).current()  -> LEADER NAME NODE TOKEN | LEADER NAME none
//! workers KEY COUNT CLIENTS TTL_MS
//!                      -> WORKING KEY at once; CLIENTS tasks each do COUNT times: acquire KEY
//!                      (wait 60 s), fence Begin, ~1 ms, fence End, release; once all are done
//!                      -> WORKERS DONE KEY N ERRORS (N: sections whose Begin and End the fence
//!                      accepted; ERRORS: failed acquisitions, fence writes and releases)
//! ```
//!
//! Each command runs in a task of its own, so a long one (`lock` with a wait) does not hold up
//! the next; every reply is one line, flushed. `KEY` is one word; `""` stands for the empty key
//! (and is echoed as `""`). The fence is the `fence` service of `colony_tests::fence` at the
//! `--fence` address (a node of another cluster, called with `.at`). With
//! `--lock-max-ttl-ms`, the node's `lock_max_ttl` (and so its start-up quarantine).
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

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{Code, Context, Error, Handler, Leadership, LockGuard, Node, Redelivery};
use colony_tests::fence::{self, Phase, FENCE};
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
         [--ack-wait-ms MS] [--handle-delay-ms MS] [--record-dir DIR] \
         [--lock-max-ttl-ms MS] [--fence ADDR]"
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
    let mut lock_max_ttl: Option<Duration> = None;
    let mut fence: Option<SocketAddr> = None;
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
            "--lock-max-ttl-ms" => lock_max_ttl = Some(Duration::from_millis(millis(args.next()))),
            "--fence" => {
                fence = Some(
                    args.next()
                        .and_then(|a| a.parse().ok())
                        .unwrap_or_else(|| usage()),
                )
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

    let mut builder = Node::builder()
        .name(name.clone())
        .listen(listen)
        .ca_dir(ca_dir)
        .seeds(seeds);
    if let Some(max_ttl) = lock_max_ttl {
        builder = builder.lock_max_ttl(max_ttl);
    }
    let node = builder.start().await.unwrap_or_else(|e| {
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

    // The commands' tasks reach the node through a weak reference, so that the node can be
    // shut down gracefully whatever they are waiting for.
    let node = Arc::new(node);
    let commands = Commands {
        node: Arc::downgrade(&node),
        name: name.clone(),
        fence,
        guards: Mutex::default(),
        leaderships: Mutex::default(),
    };
    // Serve (and obey the commands on stdin) until stdin reaches end of file (the test dropped
    // its end, or died) or a signal asks to stop.
    let why = tokio::select! {
        () = serve_commands(Arc::new(commands)) => "stdin closed",
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    eprintln!("colony-test-node {name}: {why}; shutting down");
    let mut node = Some(node);
    for _ in 0..100 {
        match Arc::try_unwrap(node.take().expect("the node")) {
            Ok(node) => {
                node.shutdown().await;
                break;
            }
            // A command holds it for a moment.
            Err(shared) => {
                node = Some(shared);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    eprintln!("colony-test-node {name}: stopped");
    // Not a return from main: the runtime would wait for the blocking read of stdin, which
    // cannot be cancelled, when the process stops on a signal with its stdin still open.
    std::process::exit(0);
}

/// A flag's value in milliseconds.
fn millis(arg: Option<String>) -> u64 {
    arg.and_then(|a| a.parse().ok()).unwrap_or_else(|| usage())
}

/// What the commands work with: the node, the fence, the locks and leaderships held.
struct Commands {
    node: std::sync::Weak<Node>,
    name: String,
    fence: Option<SocketAddr>,
    guards: Mutex<HashMap<String, LockGuard>>,
    leaderships: Mutex<HashMap<String, Leadership>>,
}

/// How long a worker waits for the lock before it counts an error.
const WORKER_WAIT: Duration = Duration::from_secs(60);

/// Runs the commands read on stdin, one a line (see the top of this file), each in a task of
/// its own; returns once stdin reaches end of file (or fails).
async fn serve_commands(commands: Arc<Commands>) {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&line).trim().to_string();
                tokio::spawn(run_command(commands.clone(), line));
            }
        }
    }
}

/// `""` on the command line is the empty key.
fn key_of(word: &str) -> String {
    if word == "\"\"" {
        String::new()
    } else {
        word.to_string()
    }
}

/// An error's code and detail, on one line.
fn describe(e: &Error) -> String {
    format!("{:?} {}", e.code(), e.detail().replace('\n', " "))
}

/// Runs one command line, or reports on stderr that it is not one.
async fn run_command(cmd: Arc<Commands>, line: String) {
    let Some(node) = cmd.node() else { return };
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
    match words.as_slice() {
        ["cut", peers @ ..] => match peers
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<SocketAddr>, _>>()
        {
            Ok(peers) if !peers.is_empty() => {
                node.cut_off(peers);
                acknowledge("CUT");
            }
            _ => eprintln!("colony-test-node: ignored {line:?}: expected cut ADDR [ADDR...]"),
        },
        ["restore"] => {
            node.restore();
            acknowledge("RESTORED");
        }
        ["members"] => {
            let mut names: Vec<String> = node.members().into_iter().map(|m| m.name).collect();
            names.sort();
            acknowledge(&format!("MEMBERS {}", names.join(" ")));
        }
        ["lock", key, _, _] if number(2).is_some() && number(3).is_some() => {
            let (ttl, wait) = (number(2).unwrap_or(0), number(3).unwrap_or(0));
            let request = node
                .lock(key_of(key))
                .ttl(Duration::from_millis(ttl))
                .wait(Duration::from_millis(wait));
            drop(node);
            let acquired = request.await;
            match acquired {
                Ok(guard) => {
                    let token = guard.token();
                    let earlier = cmd.guards.lock().unwrap().insert(key.to_string(), guard);
                    drop(earlier);
                    acknowledge(&format!("LOCKED {key} {token}"));
                }
                Err(e) => acknowledge(&format!("REFUSED {key} {}", describe(&e))),
            }
        }
        ["write", key] => {
            drop(node);
            let token = cmd.guards.lock().unwrap().get(*key).map(LockGuard::token);
            let reply = match token {
                None => "none".to_string(),
                Some(token) => {
                    let writer = cmd.name.clone();
                    match cmd.write(&key_of(key), token, writer, Phase::Single).await {
                        Ok(()) => "accepted".to_string(),
                        Err(e) if e.code() == Code::Conflict => "rejected".to_string(),
                        Err(e) => format!("failed {}", describe(&e)),
                    }
                }
            };
            acknowledge(&format!("WRITE {key} {reply}"));
        }
        ["held", key] => {
            let held = cmd
                .guards
                .lock()
                .unwrap()
                .get(*key)
                .is_some_and(LockGuard::is_held);
            acknowledge(&format!("HELD {key} {held}"));
        }
        ["release", key] => {
            drop(node);
            let guard = cmd.guards.lock().unwrap().remove(*key);
            let reply = match guard {
                None => "none".to_string(),
                Some(guard) => match guard.release().await {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{:?}", e.code()),
                },
            };
            acknowledge(&format!("RELEASED {key} {reply}"));
        }
        ["elect", name, _] if number(2).is_some() => {
            let ttl = Duration::from_millis(number(2).unwrap_or(0));
            acknowledge(&format!("CAMPAIGNING {name}"));
            let election = node.elect(*name).ttl(ttl);
            drop(node);
            match election.await {
                Ok(leadership) => {
                    let token = leadership.token();
                    let lost = leadership.lost();
                    cmd.leaderships
                        .lock()
                        .unwrap()
                        .insert(name.to_string(), leadership);
                    acknowledge(&format!("LEADING {name} {token}"));
                    lost.await;
                    acknowledge(&format!("DEPOSED {name} {token}"));
                }
                Err(e) => acknowledge(&format!("ELECTION {name} failed {}", describe(&e))),
            }
        }
        ["leader", name] => match node.leader_of(*name).current() {
            Some(leader) => acknowledge(&format!("LEADER {name} {} {}", leader.node, leader.token)),
            None => acknowledge(&format!("LEADER {name} none")),
        },
        ["workers", key, _, _, _]
            if number(2).is_some() && number(3).is_some() && number(4).is_some() =>
        {
            let (count, clients) = (number(2).unwrap_or(0), number(3).unwrap_or(0));
            let ttl = Duration::from_millis(number(4).unwrap_or(0));
            acknowledge(&format!("WORKING {key}"));
            drop(node);
            let workers: Vec<_> = (0..clients)
                .map(|i| tokio::spawn(work(cmd.clone(), key_of(key), i, count, ttl)))
                .collect();
            let (mut done, mut errors) = (0, 0);
            for worker in workers {
                let (d, e) = worker.await.unwrap_or((0, count));
                done += d;
                errors += e;
            }
            acknowledge(&format!("WORKERS DONE {key} {done} {errors}"));
        }
        _ => eprintln!("colony-test-node: ignored unknown command {line:?}"),
    }
}

/// One worker of `workers`: `count` critical sections on `key`; (completed, errors).
async fn work(cmd: Arc<Commands>, key: String, i: u64, count: u64, ttl: Duration) -> (u64, u64) {
    let writer = format!("{}/w{i}", cmd.name);
    let (mut done, mut errors) = (0, 0);
    for _ in 0..count {
        let Some(request) = cmd
            .node()
            .map(|node| node.lock(key.clone()).ttl(ttl).wait(WORKER_WAIT))
        else {
            return (done, errors + 1);
        };
        let guard = match request.await {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("colony-test-node {writer}: lock {key:?}: {e}");
                errors += 1;
                continue;
            }
        };
        let token = guard.token();
        let begun = cmd.write(&key, token, writer.clone(), Phase::Begin).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let ended = cmd.write(&key, token, writer.clone(), Phase::End).await;
        match (begun, ended) {
            (Ok(()), Ok(())) => done += 1,
            (b, e) => {
                eprintln!("colony-test-node {writer}: section {token}: begin {b:?}, end {e:?}");
                errors += 1;
            }
        }
        if let Err(e) = guard.release().await {
            eprintln!("colony-test-node {writer}: release {key:?}: {e}");
            errors += 1;
        }
    }
    (done, errors)
}

impl Commands {
    /// The node, unless it is shutting down.
    fn node(&self) -> Option<Arc<Node>> {
        self.node.upgrade()
    }

    /// One write to the fence.
    async fn write(
        &self,
        key: &str,
        token: u64,
        writer: String,
        phase: Phase,
    ) -> Result<(), Error> {
        let Some(at) = self.fence else {
            return Err(Error::bad_request("no --fence address given"));
        };
        let Some(node) = self.node() else {
            return Err(Error::unavailable("the node is shutting down"));
        };
        let client = node.client();
        drop(node);
        client
            .request(
                FENCE,
                fence::Write {
                    key: key.to_string(),
                    token,
                    writer,
                    phase,
                },
            )
            .at(at)
            .timeout(Duration::from_secs(5))
            .await
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
