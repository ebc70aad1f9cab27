//! Locks you can watch: workers on three nodes take turns on one lock to append to a ledger
//! that checks fencing tokens; a holder cut off from the cluster (as a long GC pause or a
//! partition would) loses its lease, another node takes the lock, and the stale holder's late
//! write is refused by the ledger; then three nodes elect a scheduler, the leader's node stops,
//! and another takes over while an observer watches. Three nodes in one process, no server to
//! run, a few seconds; it checks what it claims.
//!
//! ```text
//! cargo run --release --example locks
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony::prelude::*;

/// The cluster's longest lease. Short for the demo: a fresh cluster waits this long before its
/// first grant (the quarantine, docs/locks.md), and a lost holder is replaced within it.
const MAX_TTL: Duration = Duration::from_millis(600);
/// Appends per worker; two workers per node.
const APPENDS: usize = 5;

/// A resource that takes fencing tokens: it refuses a write whose token is smaller than the
/// largest it has accepted. This check is what makes a lease-based lock safe.
#[derive(Default)]
struct Ledger {
    largest: u64,
    lines: Vec<(u64, String)>,
}

impl Ledger {
    fn write_if_newer(&mut self, token: u64, line: String) -> Result<(), String> {
        if token < self.largest {
            return Err(format!("refused: stale token {token} < {}", self.largest));
        }
        self.largest = token;
        self.lines.push((token, line));
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    colony_examples::init_tracing("error");
    let ca = Arc::new(colony::ClusterCa::generate()?);
    let mut nodes: Vec<Node> = Vec::new();
    for name in ["node-1", "node-2", "node-3"] {
        let mut builder = Node::builder()
            .name(name)
            .ca(ca.clone())
            .lock_max_ttl(MAX_TTL);
        if let Some(first) = nodes.first() {
            builder = builder.seeds([first.addr().to_string()]);
        }
        nodes.push(builder.start().await?);
    }
    for node in &nodes {
        colony_examples::wait_for("the cluster to form", || node.members().len() == 3).await;
    }
    println!("3 nodes up; the first lock waits out the fresh cluster's quarantine ({MAX_TTL:?} + 2 % + 2 s settle)");

    // 1. Contention: two workers per node append to the ledger under one lock.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for node in &nodes {
        for worker in 0..2 {
            let (client, ledger) = (node.client(), ledger.clone());
            let name = node.name().to_string();
            workers.push(tokio::spawn(async move {
                for i in 0..APPENDS {
                    let guard = client
                        .lock("ledger")
                        .ttl(MAX_TTL)
                        .wait(Duration::from_secs(10))
                        .await?;
                    let line = format!("{name}/w{worker} #{i}");
                    let written = ledger.lock().unwrap().write_if_newer(guard.token(), line);
                    written.map_err(Error::internal)?;
                    guard.release().await?;
                }
                Ok::<_, Error>(())
            }));
        }
    }
    for worker in workers {
        worker.await??;
    }
    let appended = ledger.lock().unwrap().lines.len();
    println!(
        "{appended} appends from 6 workers on 3 nodes in {:?}: each under the lock, tokens rising",
        started.elapsed()
    );
    assert_eq!(appended, 6 * APPENDS);

    // 2. A holder cut off from the cluster: to the others, a pause and a partition look alike.
    let stale = nodes[2].lock("ledger").ttl(MAX_TTL).await?;
    println!("node-3 holds the ledger lock with token {}", stale.token());
    nodes[2].cut_off([nodes[0].addr(), nodes[1].addr()]);
    for node in &nodes[..2] {
        node.cut_off([nodes[2].addr()]);
    }
    println!("node-3 is cut off from the others");
    let fresh = nodes[0]
        .lock("ledger")
        .ttl(MAX_TTL)
        .wait(Duration::from_secs(20))
        .await?;
    println!(
        "node-1 took the lock once node-3's lease ran out: token {} > {}",
        fresh.token(),
        stale.token()
    );
    ledger
        .lock()
        .unwrap()
        .write_if_newer(fresh.token(), "node-1, after the cut".into())?;
    let late = ledger
        .lock()
        .unwrap()
        .write_if_newer(stale.token(), "node-3, late".into());
    println!("node-3's late write: {late:?}");
    assert!(late.is_err(), "the ledger refuses the stale holder");
    tokio::time::timeout(Duration::from_secs(10), stale.lost()).await?;
    println!(
        "node-3's guard knows its lease is lost: held = {}",
        stale.is_held()
    );
    drop((stale, fresh));
    for node in &nodes {
        node.restore();
    }

    // 3. Leader election, with an observer.
    for node in &nodes {
        colony_examples::wait_for("the cluster to heal", || node.members().len() == 3).await;
    }
    let mut observer = nodes[0].leader_of("scheduler");
    let leader = nodes[1].elect("scheduler").ttl(MAX_TTL).await?;
    let seen = observer.changed().await;
    println!("the observer on node-1 sees the scheduler's leader: {seen:?}");
    let candidate = {
        let election = nodes[2].elect("scheduler").ttl(MAX_TTL);
        tokio::spawn(async move { election.await })
    };
    let first_term = leader.token();
    let gone = nodes.remove(1);
    println!("node-2, the leader, shuts down");
    drop(leader);
    gone.shutdown().await;
    let next = candidate.await??;
    println!("node-3 leads now, token {} > {first_term}", next.token());
    assert!(next.token() > first_term);
    loop {
        if let Some(l) = observer.changed().await {
            if l.node == "node-3" {
                println!("the observer saw it: {l:?}");
                break;
            }
        }
    }
    next.resign().await?;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
