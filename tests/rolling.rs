//! A rolling restart under load fails no call: three `colony-test-node` processes serve
//! `fixture`, an in-process client node keeps 8 callers busy with idempotent calls by name
//! (3 retries), and each process in turn gets SIGTERM (so it shuts down gracefully: leaves
//! gossip, refuses new calls, finishes the ones in flight, drains its services, exits 0), is
//! replaced by a new process of the same name on a fresh port, and takes calls again before
//! the next one stops.
//!
//! Asserted: no call failed, and no attempt either (the client's selector saw no refusal and no
//! lost connection: the leaving process was out of its view before it stopped serving, so the
//! retries were a safety net that was not needed); calls completed while each process was away.
//! The totals, the longest call and the failed attempts are printed for the record.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{CallDefaults, Client, Node};
use colony_tests::load::{idempotent_echo, Load, Until};
use colony_tests::*;
use tokio::task::JoinHandle;

const EXE: &str = env!("CARGO_BIN_EXE_colony-test-node");

/// The server processes, restarted in this order.
const NAMES: [&str; 3] = ["n1", "n2", "n3"];
/// Calling tasks.
const CALLERS: usize = 8;
/// Further attempts per call.
const RETRIES: u32 = 3;
/// Deadline of one call, every attempt included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest time after which an attempt is abandoned for another instance.
const ATTEMPT_CUTOFF: Duration = Duration::from_secs(2);
/// Calls completed before the first restart.
const WARM_UP: u64 = 300;
/// Calls a new process must have answered before the next one stops.
const NEW_PROCESS_CALLS: u64 = 30;
/// Calls completed after the last restart, before the load stops.
const AFTER: u64 = 300;

async fn spawn(ca_dir: &Path, name: &str, seeds: &[SocketAddr]) -> ChildNode {
    let extra: Vec<String> = seeds
        .iter()
        .flat_map(|s| ["--seed".to_string(), s.to_string()])
        .collect();
    ChildNode::start(EXE.as_ref(), ca_dir, name, &extra).await
}

/// Calls the client's selector has made to `fixture@name` at `addr`.
async fn calls_to(client: &Client, name: &str, addr: SocketAddr) -> u64 {
    let id = format!("{FIXTURE}@{name}");
    client
        .instance_report(FIXTURE)
        .await
        .into_iter()
        .find(|r| r.id == id && r.addr == addr)
        .map_or(0, |r| r.calls)
}

/// Waits (bounded) until the client's selector has made at least `n` calls to `name` at `addr`.
async fn wait_calls_to(client: &Client, name: &str, addr: SocketAddr, n: u64) {
    within(&format!("{n} calls to {name} at {addr}"), async {
        while calls_to(client, name, addr).await < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The largest `(calls, failures)` the client's selector has reported for each instance
/// incarnation (id and address), sampled until `stop` is set.
type Attempts = Arc<Mutex<BTreeMap<(String, SocketAddr), (u64, u64)>>>;

fn sample_attempts(client: &Client, stop: Arc<AtomicBool>) -> (Attempts, JoinHandle<()>) {
    let attempts = Attempts::default();
    let (client, seen) = (client.clone(), attempts.clone());
    let sampler = tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for r in client.instance_report(FIXTURE).await {
                let mut seen = seen.lock().unwrap();
                let e = seen.entry((r.id, r.addr)).or_default();
                *e = (e.0.max(r.calls), e.1.max(r.failures));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    (attempts, sampler)
}

/// True when `registry` lists exactly one `fixture` instance per process, at its address now.
fn serving(registry: &colony::Registry, servers: &[ChildNode]) -> bool {
    let mut seen: Vec<(String, SocketAddr)> = registry
        .instances(FIXTURE)
        .into_iter()
        .map(|i| (i.id, i.addr))
        .collect();
    seen.sort();
    let mut want: Vec<(String, SocketAddr)> = NAMES
        .iter()
        .zip(servers)
        .map(|(name, s)| (format!("{FIXTURE}@{name}"), s.addr()))
        .collect();
    want.sort();
    seen == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_idempotent_load_fails_no_call() {
    let ca = new_ca();
    let dir = write_ca_dir(&ca);
    let first = spawn(dir.path(), NAMES[0], &[]).await;
    let seed = first.addr();
    let mut servers = vec![first];
    for name in &NAMES[1..] {
        servers.push(spawn(dir.path(), name, &[seed]).await);
    }
    let me: Node = node_builder(&ca, "caller")
        .seeds([seed.to_string()])
        // No attempt is abandoned for a scheduling hiccup of the loaded machine: every failed
        // attempt the selector counts is then a refusal or a lost connection.
        .client_defaults(CallDefaults {
            min_attempt_timeout: ATTEMPT_CUTOFF,
            ..CallDefaults::default()
        })
        .client_only()
        .start()
        .await
        .expect("client node starts");
    converge(&me, "the three fixtures", |r| serving(r, &servers)).await;
    let client = me.client();

    let stop_sampling = Arc::new(AtomicBool::new(false));
    let (attempts, sampler) = sample_attempts(&client, stop_sampling.clone());
    let load = Load::start(
        CALLERS,
        Until::Stopped,
        idempotent_echo(&client, RETRIES, CALL_TIMEOUT),
    );
    load.wait_for("the warm-up calls", |t| t.completed() >= WARM_UP)
        .await;
    for (name, server) in NAMES.iter().zip(&servers) {
        wait_calls_to(&client, name, server.addr(), NEW_PROCESS_CALLS).await;
    }

    let mut during = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let old = servers[i].addr();
        let at_stop = load.tally().completed();
        servers[i].terminate();
        let status = servers[i].wait_exit().await;
        assert!(
            status.success(),
            "{name} did not shut down cleanly on SIGTERM: {status}"
        );
        let seeds: Vec<SocketAddr> = servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.addr())
            .collect();
        servers[i] = spawn(dir.path(), name, &seeds).await;
        let new = servers[i].addr();
        assert_ne!(new, old, "{name} restarts on a fresh port");
        converge(&me, &format!("{name} serving again at {new}"), |r| {
            serving(r, &servers)
        })
        .await;
        let at_back = load.tally().completed();
        during.push(at_back - at_stop);
        wait_calls_to(&client, name, new, NEW_PROCESS_CALLS).await;
        assert_eq!(
            load.tally().failed(),
            0,
            "calls failed around the restart of {name}: {}",
            load.tally().describe()
        );
    }
    load.wait_more(AFTER, "calls after the last restart").await;
    let (tally, elapsed) = load.stop().await;
    stop_sampling.store(true, Ordering::SeqCst);
    within("the sampler to stop", sampler)
        .await
        .expect("sampler");
    let (attempts, failed_attempts) = attempts
        .lock()
        .unwrap()
        .values()
        .fold((0, 0), |(a, f), (calls, failures)| {
            (a + calls, f + failures)
        });

    eprintln!(
        "rolling restart: {} calls in {elapsed:.1?}, {} failed; calls while each process was \
         stopped and replaced: {during:?}; longest call {:.1?}; attempts ≈ {attempts}, of \
         which failed (and were retried) ≈ {failed_attempts}",
        tally.completed(),
        tally.failed(),
        tally.slowest()
    );
    assert_eq!(
        tally.failed(),
        0,
        "calls failed during the rolling restart: {}",
        tally.describe()
    );
    assert!(
        tally.completed() >= WARM_UP + AFTER,
        "too few calls: {}",
        tally.describe()
    );
    // Stronger than no failed call: the graceful shutdown alone (leave gossip, then refuse,
    // then drain) kept every attempt away from a stopping process, and no retry was needed.
    // Without the leave, refusals and lost connections reach the selector here while the
    // retries still hide them from the callers.
    assert_eq!(
        failed_attempts, 0,
        "attempts failed during the rolling restart (retried, so no call failed): the client \
         kept calling processes that were shutting down"
    );
    for (name, calls) in NAMES.iter().zip(&during) {
        assert!(
            *calls > 0,
            "no call completed while {name} was restarting: the load was not continuous"
        );
    }

    within("client shutdown", me.shutdown()).await;
    drop(servers);
}
