//! Membership figures: how fast gossip spreads news and notices a death, and what it costs.
//!
//! N nodes in one process (each with its own QUIC endpoint and chitchat instance), all seeded
//! with the first. Measured: time until every node sees all N members; time until a service
//! spawned on the last node is visible on every node; gossip bytes per second per node in a
//! steady window; time until every survivor drops a node that vanished without leaving (the
//! in-process stand-in for `kill -9`: no goodbye, no more heartbeats). There is no peer here:
//! these are absolute figures, against the targets (visible in seconds, death noticed
//! in about 3 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::{ClusterCa, Context, Error, Handler, Message, Node};
use serde::{Deserialize, Serialize};

use crate::certs::BoxError;
use crate::scenarios::Section;
use crate::table::Table;

/// The longest any one convergence may take before the run is reported as failed.
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Probe;

impl Message for Probe {
    type Reply = ();
    const ENDPOINT: &'static str = "Probe.Probe";
}

struct Prober;

impl Handler<Probe> for Prober {
    async fn handle(&mut self, _req: Probe, _ctx: &Context) -> Result<(), Error> {
        Ok(())
    }
}

/// Figures of one cluster size.
struct Figures {
    nodes: usize,
    joined: Duration,
    visible: Duration,
    bytes_per_node_s: f64,
    detected: Duration,
}

/// Waits until every node in `nodes` satisfies `ready`; the time it took.
async fn all_see(
    nodes: &[Node],
    ready: impl Fn(&colony::Registry) -> bool + Copy,
) -> Result<Duration, BoxError> {
    let start = Instant::now();
    for node in nodes {
        let left = LIMIT.saturating_sub(start.elapsed());
        if !node.registry().wait_until(left, ready).await {
            return Err(format!("{} did not converge within {LIMIT:?}", node.name()).into());
        }
    }
    Ok(start.elapsed())
}

async fn measure(size: usize, steady: Duration) -> Result<Figures, BoxError> {
    let ca = Arc::new(ClusterCa::generate()?);
    let first = Node::builder().name("n00").ca(ca.clone()).start().await?;
    let seed = first.addr().to_string();
    let mut nodes = vec![first];
    let started = Instant::now();
    for i in 1..size {
        let node = Node::builder()
            .name(format!("n{i:02}"))
            .ca(ca.clone())
            .seeds([seed.clone()])
            .start()
            .await?;
        nodes.push(node);
    }
    all_see(&nodes, move |r| r.members().len() == size).await?;
    let joined = started.elapsed();

    let spawned = Instant::now();
    nodes[size - 1]
        .service("probe")
        .handler::<Probe>()
        .spawn(|| Prober)
        .await?;
    all_see(&nodes, |r| !r.instances("probe").is_empty()).await?;
    let visible = spawned.elapsed();

    let sent_before: u64 = nodes.iter().map(|n| n.gossip_stats().bytes_sent).sum();
    let window = Instant::now();
    tokio::time::sleep(steady).await;
    let sent_after: u64 = nodes.iter().map(|n| n.gossip_stats().bytes_sent).sum();
    let bytes_per_node_s =
        (sent_after - sent_before) as f64 / size as f64 / window.elapsed().as_secs_f64();

    let victim = nodes.pop().expect("at least two nodes");
    let died = Instant::now();
    drop(victim);
    all_see(&nodes, move |r| r.members().len() == size - 1).await?;
    let detected = died.elapsed();

    for node in nodes {
        drop(node);
    }
    Ok(Figures {
        nodes: size,
        joined,
        visible,
        bytes_per_node_s,
        detected,
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs the membership measurements for each cluster size.
pub(crate) async fn run(sizes: &[usize], steady: Duration) -> Section {
    let mut table = Table::new(&[
        "nodes",
        "all members seen",
        "new instance visible on all",
        "gossip sent per node",
        "silent death noticed by all",
    ]);
    let mut notes = Vec::new();
    for &size in sizes {
        eprintln!("gossip: {size} nodes");
        // Each cluster runs on its own task: hot loops never run in the runtime's entry point.
        match tokio::spawn(measure(size.max(2), steady)).await {
            Ok(Ok(f)) => table.row(vec![
                f.nodes.to_string(),
                secs(f.joined),
                secs(f.visible),
                format!("{:.0} B/s", f.bytes_per_node_s),
                secs(f.detected),
            ]),
            Ok(Err(e)) => notes.push(format!("{size} nodes: {e}")),
            Err(e) => notes.push(format!("{size} nodes: task failed: {e}")),
        }
    }
    notes.push(
        "Gossip every 200 ms, phi threshold 8 (colony's defaults). Bytes are gossip payloads \
         (chitchat messages) sent, excluding QUIC/TLS overhead; steady window after convergence."
            .into(),
    );
    Section {
        title: "Membership (gossip over QUIC)".into(),
        about: "N nodes in one process, seeded with the first; times are from the event to the \
                moment the last node's registry reflects it."
            .into(),
        table,
        notes,
        goals: Vec::new(),
    }
}
