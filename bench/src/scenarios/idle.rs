//! Scenario 7: what an idle actor costs, colony's service instance vs a bare ractor actor.
//!
//! One process, nothing freed between contenders: the node starts first (its sockets, gossip
//! and runtime are not an instance's cost), then `count` bare ractor actors are spawned and
//! kept, then a colony service of `count` instances, then (with `--spread`) the same number of
//! instances over that many services. Each row is the growth of the process's resident set while
//! its actors were spawned, divided by their number: nothing is freed before the last reading,
//! so no row reuses memory another one gave back. Run it on its own (`colony-bench actors`), as
//! RSS is the whole process's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::prelude::*;
use colony::ClusterCa;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::certs::BoxError;
use crate::colony_side::{Echo, EchoReply};
use crate::table::{count, times, Table};

use super::Section;

/// The bar for an idle instance.
const GOAL_BYTES: f64 = 2048.0;

/// A bare actor that does nothing: ractor's floor.
struct Idle;

impl Actor for Idle {
    type Msg = u64;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<u64>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// A colony service that is never called (its handler only has to exist).
struct Quiet;

impl Handler<Echo> for Quiet {
    async fn handle(&mut self, req: Echo, _ctx: &Context) -> Result<EchoReply, Error> {
        Ok(EchoReply {
            id: req.id,
            body: req.body,
        })
    }
}

/// One row: how many actors, how much the resident set grew, how long spawning took.
struct Cost {
    label: String,
    held: usize,
    rss_added: u64,
    spawn: Duration,
}

impl Cost {
    fn bytes_each(&self) -> f64 {
        self.rss_added as f64 / self.held.max(1) as f64
    }
}

/// The process's resident set in bytes (`VmRSS` of `/proc/self/status`; 0 where there is none).
pub(super) fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs `spawn`, measuring the resident set it adds and the time it takes.
async fn measure<F, T>(label: String, held: usize, spawn: F) -> Result<(Cost, T), BoxError>
where
    F: std::future::Future<Output = Result<T, BoxError>>,
{
    let before = rss();
    let started = Instant::now();
    let kept = spawn.await?;
    let spawn = started.elapsed();
    // Let spawned tasks reach their idle await before the reading.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cost = Cost {
        label,
        held,
        rss_added: rss().saturating_sub(before),
        spawn,
    };
    eprintln!(
        "  actors: {:<36} {:>9} held  {:>7.0} B each  {:>6.2} µs each to spawn",
        cost.label,
        count(cost.held as u64),
        cost.bytes_each(),
        cost.spawn.as_secs_f64() * 1e6 / cost.held.max(1) as f64,
    );
    Ok((cost, kept))
}

/// Scenario 7: `count` idle instances of colony and of bare ractor, in one process.
pub(crate) async fn idle(count_each: usize, spread: usize) -> Result<Section, BoxError> {
    let n = count_each.max(1);
    let ca = Arc::new(ClusterCa::generate()?);
    let node = Node::builder()
        .name("idle")
        .listen("127.0.0.1:0")
        .ca(ca)
        .start()
        .await?;
    eprintln!("actors: {n} each, node started at {} MB RSS", rss() >> 20);

    let (raw, actors) = measure("raw ractor actor".into(), n, async {
        let mut actors = Vec::with_capacity(n);
        for _ in 0..n {
            actors.push(Actor::spawn(None, Idle, ()).await?.0);
        }
        Ok(actors)
    })
    .await?;
    let mut rows = vec![raw];

    let (one, _) = measure(format!("colony instance, 1 service × {n}"), n, async {
        node.service("idle")
            .instances(n)
            .handler::<Echo>()
            .spawn(|| Quiet)
            .await?;
        Ok(())
    })
    .await?;
    rows.push(one);

    if spread > 1 {
        let per = n.div_ceil(spread);
        let label = format!("colony instance, {spread} services × {per}");
        let (many, _) = measure(label, per * spread, async {
            for s in 0..spread {
                node.service(format!("idle-{s}"))
                    .instances(per)
                    .handler::<Echo>()
                    .spawn(|| Quiet)
                    .await?;
            }
            Ok(())
        })
        .await?;
        rows.push(many);
    }

    let total = rss();
    for actor in actors {
        actor.stop(None);
    }
    node.shutdown().await;

    let mut table = Table::new(&[
        "system",
        "held",
        "RSS added",
        "bytes / instance",
        "spawn / instance",
        "bytes ÷ raw ractor",
    ]);
    let floor = rows[0].bytes_each();
    for row in &rows {
        table.row(vec![
            row.label.clone(),
            count(row.held as u64),
            format!("{:.1} MB", row.rss_added as f64 / 1e6),
            format!("{:.0}", row.bytes_each()),
            format!(
                "{:.2} µs",
                row.spawn.as_secs_f64() * 1e6 / row.held.max(1) as f64
            ),
            times(row.bytes_each() / floor),
        ]);
    }
    let worst = rows[1..].iter().map(Cost::bytes_each).fold(0.0, f64::max);
    Ok(Section {
        title: "7. Idle instance memory: colony vs raw ractor".into(),
        about: format!(
            "One process: a node, then {n} bare ractor actors (`Msg = u64`, no state), then a \
             colony service of {n} instances (an echo handler, never called), kept alive together. Bytes per \
             instance = growth of the resident set while spawning ÷ instances; spawn time is \
             sequential, as the supervisor starts instances one after another."
        ),
        table,
        notes: vec![
            format!(
                "goal: ≤ {GOAL_BYTES:.0} bytes per idle colony instance: {} ({worst:.0} B at most)",
                if worst <= GOAL_BYTES { "met" } else { "not met" }
            ),
            format!("resident set with everything held: {} MB", total >> 20),
        ],
        goals: Vec::new(),
    })
}
