//! The four scenarios, each measured against its peers in the same run.
//!
//! Every cell (one concurrency, one payload) is measured `rounds` times per contender, the
//! contenders taking turns A B C, C B A, A B C... Figures are medians across rounds; a ratio
//! against the peer is the median of the ratios of runs made in the same round.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use colony::{ClusterCa, Node};
use tonic::transport::Channel;

use crate::certs::{BoxError, Pki};
use crate::child::{ChildServer, ServerKind, WorkDir};
use crate::colony_side::{self, ColonyCaller, Trust};
use crate::load::{drive, Plan};
use crate::local::{self, RactorCaller};
use crate::netstat;
use crate::raw_quinn::{self, RawCaller, Shape};
use crate::stats::{paired_ratio, round_order, Summary};
use crate::table::{mb_per_s, rate, size, time_us, times, Goal, Table, Want};
use crate::tonic_side::{self, TonicCaller};

/// How every cell is run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Calls before the clock starts, per cell and round.
    pub(crate) warmup: Duration,
    /// Measured window per cell and round.
    pub(crate) duration: Duration,
    /// Runs of each cell per contender.
    pub(crate) rounds: usize,
    /// Instances of colony's echo service in the server process; with several values, one
    /// colony server per value runs in scenario 1 (the first is the one the goals use).
    pub(crate) instances: Vec<usize>,
    /// Concurrency levels of the unary RPC scenario.
    pub(crate) concurrency: Vec<usize>,
    /// Payload of the unary RPC, sequential and local scenarios, bytes.
    pub(crate) payload: usize,
    /// Payloads of the sweep, bytes.
    pub(crate) sweep_sizes: Vec<usize>,
    /// Concurrency of the sweep.
    pub(crate) sweep_concurrency: usize,
    /// Run only the systems whose label contains this text (for profiling one side).
    pub(crate) only: Option<String>,
}

impl Settings {
    fn plan(&self, concurrency: usize) -> Plan {
        Plan {
            concurrency,
            warmup: self.warmup,
            duration: self.duration,
        }
    }
}

/// One scenario's output: a titled table, notes, and the goals it measures.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// Heading.
    pub(crate) title: String,
    /// What is measured, one paragraph.
    pub(crate) about: String,
    /// The figures.
    pub(crate) table: Table,
    /// Remarks (failed calls...).
    pub(crate) notes: Vec<String>,
    /// Goals this scenario decides.
    pub(crate) goals: Vec<Goal>,
}

impl Section {
    /// The section as markdown.
    pub(crate) fn to_markdown(&self) -> String {
        let mut out = format!(
            "## {}\n\n{}\n\n{}",
            self.title,
            self.about,
            self.table.to_markdown()
        );
        for note in &self.notes {
            out.push_str(&format!("\n- {note}"));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// A system measured in a scenario.
trait Contender: Sync {
    /// Its name in the tables.
    fn label(&self) -> &str;
    /// One run of `plan` with `payload`-byte bodies.
    fn run(&self, plan: Plan, payload: usize) -> impl Future<Output = Summary> + Send;
}

/// Runs one cell: every contender `rounds` times, alternating. Returns `[contender][round]`.
///
/// UDP datagrams the kernel dropped during a contender's runs are reported in `notes`.
async fn alternate<C: Contender>(
    what: &str,
    contenders: &[&C],
    settings: &Settings,
    plan: Plan,
    payload: usize,
    notes: &mut Vec<String>,
) -> Vec<Vec<Summary>> {
    let mut runs = vec![Vec::new(); contenders.len()];
    let mut drops = vec![0u64; contenders.len()];
    for round in 0..settings.rounds {
        for i in round_order(round, contenders.len()) {
            if let Some(only) = &settings.only {
                if !contenders[i].label().contains(only.as_str()) {
                    continue;
                }
            }
            let before = netstat::udp_rcvbuf_errors();
            let summary = contenders[i].run(plan, payload).await;
            drops[i] += netstat::dropped(before, netstat::udp_rcvbuf_errors());
            eprintln!(
                "  {what} round {}/{} {:<26} {:>10} req/s  p50 {:>9}  p99 {:>9}{}",
                round + 1,
                settings.rounds,
                contenders[i].label(),
                rate(summary.throughput),
                time_us(summary.p50_us),
                time_us(summary.p99_us),
                if summary.errors > 0 {
                    format!("  ({} errors)", summary.errors)
                } else {
                    String::new()
                },
            );
            runs[i].push(summary);
        }
    }
    for (contender, dropped) in contenders.iter().zip(drops) {
        if dropped > 0 {
            notes.push(format!(
                "{} ({what}): the kernel dropped {dropped} UDP datagrams (socket receive buffer \
                 full) during its runs (system-wide counter)",
                contender.label()
            ));
        }
    }
    runs
}

fn field(runs: &[Summary], f: fn(&Summary) -> f64) -> Vec<f64> {
    runs.iter().map(f).collect()
}

fn error_notes(notes: &mut Vec<String>, cell: &str, label: &str, runs: &[Summary]) {
    let errors: u64 = runs.iter().map(|s| s.errors).sum();
    if errors > 0 {
        notes.push(format!("{label} ({cell}): {errors} failed calls"));
    }
}

fn body(payload: usize) -> String {
    "x".repeat(payload)
}

// ---------------------------------------------------------------------------------------------
// Scenarios 1 and 2: two processes.

/// A system called from this process, served by a child.
enum Remote {
    Colony {
        label: String,
        client: colony::Client,
        addr: std::net::SocketAddr,
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
            Remote::Colony { client, addr, .. } => {
                drive(plan, || {
                    ColonyCaller::new(client.clone(), Some(*addr), body.clone())
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
    /// One colony server per instance count, in the order of the settings.
    colony: Vec<Remote>,
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
            let child = ChildServer::start(kind, dir.path(), instances).await?;
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
                addr: child.addr(),
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
            colony,
            tonic_tls,
            tonic_plain,
        })
    }

    /// Closes the clients and stops the children.
    pub(crate) async fn stop(self) {
        let Self {
            children,
            client_node,
            colony,
            tonic_tls,
            tonic_plain,
            _dir,
        } = self;
        drop((colony, tonic_tls, tonic_plain));
        client_node.shutdown().await;
        for child in children {
            child.stop().await;
        }
    }
}

/// Scenario 1: unary RPC at each concurrency, colony vs tonic+TLS (and tonic in clear).
pub(crate) async fn rpc(env: &RemoteEnv, settings: &Settings) -> Section {
    // colony first (one per instance count), then the peer every ratio is taken against.
    let mut contenders: Vec<&Remote> = env.colony.iter().collect();
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
        }
    }
    Section {
        title: "1. Unary RPC, two processes".into(),
        about: format!(
            "Client in the bench process, server in a child process, 127.0.0.1. Echo of a \
             {}-byte payload (`{{id: u64, body: string}}`). N tasks share one connection (one \
             QUIC connection for colony, one HTTP/2 channel for tonic), each calling in a loop. \
             colony and tonic+TLS both use TLS 1.3 on ring with client certificates.",
            settings.payload
        ),
        table,
        notes,
        goals,
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

/// A run that could not even start: no calls, one error.
fn failed(label: &str, e: BoxError) -> Summary {
    eprintln!("  {label}: set-up failed: {e}");
    let mut sample = crate::stats::Sample::default();
    sample.fail(|| e.to_string());
    sample.summarise(Duration::from_secs(1), 0)
}

enum Sequential {
    Colony {
        ca: Arc<ClusterCa>,
    },
    Raw {
        label: &'static str,
        pki: Pki,
        shape: Shape,
    },
}

impl Contender for Sequential {
    fn label(&self) -> &str {
        match self {
            Sequential::Colony { .. } => "colony remote call",
            Sequential::Raw { label, .. } => label,
        }
    }

    async fn run(&self, plan: Plan, payload: usize) -> Summary {
        let sample = match self {
            Sequential::Colony { ca } => {
                async {
                    let server = colony_side::start_server("seq-server", Trust::Ca(ca), 1).await?;
                    let client = colony_side::start_client("seq-client", ca).await?;
                    let (caller, addr, body) = (client.client(), server.addr(), body(payload));
                    let sample = drive(plan, || {
                        ColonyCaller::new(caller.clone(), Some(addr), body.clone())
                    })
                    .await;
                    client.shutdown().await;
                    server.shutdown().await;
                    Ok::<_, BoxError>(sample)
                }
                .await
            }
            Sequential::Raw { pki, shape, .. } => {
                async {
                    let (server, addr) = raw_quinn::start_server(pki)?;
                    let (client, conn) = raw_quinn::connect(pki, addr).await?;
                    let sample =
                        drive(plan, || RawCaller::new(conn.clone(), *shape, payload)).await;
                    conn.close(0u32.into(), b"done");
                    client.close(0u32.into(), b"done");
                    server.close(0u32.into(), b"done");
                    Ok::<_, BoxError>(sample)
                }
                .await
            }
        };
        match sample {
            Ok(sample) => sample.summarise(plan.duration, payload),
            Err(e) => failed(self.label(), e),
        }
    }
}

/// Scenario 3: colony's remote call vs raw quinn loops, concurrency 1, one process.
pub(crate) async fn sequential(settings: &Settings) -> Result<Section, BoxError> {
    let ca = Arc::new(ClusterCa::generate()?);
    let pki = Pki::generate()?;
    let contenders = [
        Sequential::Colony { ca },
        Sequential::Raw {
            label: "raw quinn, stream per call",
            pki: pki.clone(),
            shape: Shape::StreamPerCall,
        },
        Sequential::Raw {
            label: "raw quinn, one stream",
            pki,
            shape: Shape::OneStream,
        },
    ];
    let mut notes = Vec::new();
    eprintln!("seq: concurrency 1");
    let runs = alternate(
        "seq",
        &contenders.each_ref(),
        settings,
        settings.plan(1),
        settings.payload,
        &mut notes,
    )
    .await;

    let labels = [
        "colony remote call",
        "raw quinn, stream per call",
        "raw quinn, one stream",
    ];
    let mut table = Table::new(&[
        "system",
        "mean round trip",
        "p50",
        "p99",
        "calls/s",
        "colony time ÷ this",
    ]);
    let colony_tput = field(&runs[0], |s| s.throughput);
    // Time ratio = inverse throughput ratio, paired by round.
    let time_ratio = |i: usize| paired_ratio(&field(&runs[i], |s| s.throughput), &colony_tput);
    for (i, label) in labels.iter().enumerate() {
        if runs[i].is_empty() {
            continue;
        }
        let m = Summary::median_of(&runs[i]);
        table.row(vec![
            label.to_string(),
            time_us(m.mean_call_us()),
            time_us(m.p50_us),
            time_us(m.p99_us),
            rate(m.throughput),
            if i == 0 {
                "1.00×".into()
            } else {
                times(time_ratio(i))
            },
        ]);
        error_notes(&mut notes, "sequential", label, &runs[i]);
    }
    let goals = vec![
        Goal {
            id: "P3a",
            what: "sequential round trip, colony ÷ raw quinn stream per call".into(),
            target: 1.3,
            want: Want::AtMost,
            measured: time_ratio(1),
        },
        Goal {
            id: "P3b",
            what: "sequential round trip, colony ÷ raw quinn one stream".into(),
            target: 1.3,
            want: Want::AtMost,
            measured: time_ratio(2),
        },
    ];
    Ok(Section {
        title: "3. Sequential round trip, one process".into(),
        about: format!(
            "Concurrency 1, {}-byte payload, client and server endpoints in this process over \
             127.0.0.1. The raw quinn loops use the same TLS (1.3, ring, client certificates), \
             transport settings and framing as colony but send the payload bytes with no header, \
             codec or actor: the server echoes the frame. Every run starts its own endpoints. \
             Mean round trip = window ÷ calls.",
            settings.payload
        ),
        table,
        notes,
        goals,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: in-process calls.

enum Local {
    Colony { ca: Arc<ClusterCa> },
    Ractor,
}

impl Contender for Local {
    fn label(&self) -> &str {
        match self {
            Local::Colony { .. } => "colony local call",
            Local::Ractor => "raw ractor call!",
        }
    }

    async fn run(&self, plan: Plan, payload: usize) -> Summary {
        let body = body(payload);
        let sample = match self {
            Local::Colony { ca } => {
                async {
                    let node = colony_side::start_server("local", Trust::Ca(ca), 1).await?;
                    let client = node.client();
                    let sample = drive(plan, || {
                        ColonyCaller::new(client.clone(), None, body.clone())
                    })
                    .await;
                    node.shutdown().await;
                    Ok::<_, BoxError>(sample)
                }
                .await
            }
            Local::Ractor => {
                async {
                    let actor = local::spawn_actor().await?;
                    let sample =
                        drive(plan, || RactorCaller::new(actor.clone(), body.clone())).await;
                    actor.stop(None);
                    Ok::<_, BoxError>(sample)
                }
                .await
            }
        };
        match sample {
            Ok(sample) => sample.summarise(plan.duration, payload),
            Err(e) => failed(self.label(), e),
        }
    }
}

/// Scenario 4: colony's in-process call vs a bare ractor actor, concurrency 1.
pub(crate) async fn local(settings: &Settings) -> Result<Section, BoxError> {
    let ca = Arc::new(ClusterCa::generate()?);
    let contenders = [Local::Colony { ca }, Local::Ractor];
    let mut notes = Vec::new();
    eprintln!("local: concurrency 1");
    let runs = alternate(
        "local",
        &contenders.each_ref(),
        settings,
        settings.plan(1),
        settings.payload,
        &mut notes,
    )
    .await;

    let mut table = Table::new(&[
        "system",
        "mean call",
        "p50",
        "p99",
        "calls/s",
        "colony time ÷ this",
    ]);
    let ratio = paired_ratio(
        &field(&runs[1], |s| s.throughput),
        &field(&runs[0], |s| s.throughput),
    );
    for (i, label) in ["colony local call", "raw ractor call!"].iter().enumerate() {
        if runs[i].is_empty() {
            continue;
        }
        let m = Summary::median_of(&runs[i]);
        table.row(vec![
            label.to_string(),
            time_us(m.mean_call_us()),
            time_us(m.p50_us),
            time_us(m.p99_us),
            rate(m.throughput),
            if i == 0 {
                "1.00×".into()
            } else {
                times(ratio)
            },
        ]);
        error_notes(&mut notes, "local", label, &runs[i]);
    }
    Ok(Section {
        title: "4. Local call, one process".into(),
        about: format!(
            "Concurrency 1, {}-byte payload. colony: `client.call(\"echo\", msg)` to a service \
             of one instance on the same node (no encoding). Raw: an actor answering \
             `ractor::call!` with the same handler body. Every run starts its own node or actor. \
             Mean call = window ÷ calls; latency percentiles include two clock reads per call.",
            settings.payload
        ),
        table,
        notes,
        goals: vec![Goal {
            id: "P4",
            what: "local call time, colony ÷ raw ractor".into(),
            target: 1.2,
            want: Want::AtMost,
            measured: ratio,
        }],
    })
}
