//! Calls by name survive failing servers: three `colony-test-node` processes serve `fixture`, an
//! in-process client node keeps 16 idempotent callers busy, and
//!
//! 1. one server is killed with SIGKILL mid-load: calls in flight to it and calls sent to it
//!    before the client notices are retried on the others, and none fails;
//! 2. a fourth server that answers every call with `Unavailable` joins: its failures are
//!    retried elsewhere, none reaches a caller, and the client's selector ejects it, probes it
//!    once the ejection ends, and ejects it again.
//!
//! Only counts are asserted. The longest call and the retries are printed for the record.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony::{Client, InstanceReport, Node};
use colony_tests::load::{idempotent_echo, Load, Tally, Until};
use colony_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_colony-test-node");

/// Calling tasks.
const CONCURRENCY: usize = 16;
/// Retries per call (four attempts in all).
const RETRIES: u32 = 3;
/// Calls completed before the failure is caused.
const WARM_UP: u64 = 500;
/// Calls each instance must have had before the failure (so the failing one is in rotation).
const PER_INSTANCE_WARM_UP: u64 = 20;
/// Calls completed after the failure has played out, before the load stops.
const AFTER: u64 = 1_000;
/// How long the report reader runs at most (every wait of the test is shorter).
const LOAD_LIMIT: Duration = Duration::from_secs(60);
/// Deadline of one call, all attempts included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn spawn(dir: PathBuf, name: &str, extra: &[&str]) -> ChildNode {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    ChildNode::start(EXE.as_ref(), &dir, name, &extra).await
}

/// The largest figures the client's selector has reported for each instance.
#[derive(Debug, Default, Clone)]
struct Seen {
    calls: u64,
    failures: u64,
    ejections: u32,
    /// Reported ejected or probing at least once.
    ejected: bool,
    last: Option<InstanceReport>,
}

type SeenMap = Arc<Mutex<HashMap<String, Seen>>>;

fn fold(seen: &SeenMap, reports: Vec<InstanceReport>) {
    let mut seen = seen.lock().unwrap();
    for r in reports {
        let s = seen.entry(r.id.clone()).or_default();
        s.calls = s.calls.max(r.calls);
        s.failures = s.failures.max(r.failures);
        s.ejections = s.ejections.max(r.ejections);
        s.ejected |= r.health != "healthy" || r.ejections >= 1;
        s.last = Some(r);
    }
}

/// 16 callers, and a reader of the client's selector report beside them, until `stop`.
struct Watched {
    load: Load,
    seen: SeenMap,
    reading: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Watched {
    fn start(client: &Client) -> Self {
        let load = Load::start(
            CONCURRENCY,
            Until::Stopped,
            idempotent_echo(client, RETRIES, CALL_TIMEOUT),
        );
        let seen = SeenMap::default();
        let reading = Arc::new(AtomicBool::new(true));
        let reader = {
            let (client, seen, reading) = (client.clone(), seen.clone(), reading.clone());
            tokio::spawn(async move {
                let give_up = Instant::now() + LOAD_LIMIT;
                while reading.load(Ordering::SeqCst) && Instant::now() < give_up {
                    fold(&seen, client.instance_report(FIXTURE).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        Self {
            load,
            seen,
            reading,
            reader,
        }
    }

    fn completed(&self) -> u64 {
        self.load.tally().completed()
    }

    fn seen(&self, id: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn describe(tally: &Tally, seen: &SeenMap) -> String {
        let mut seen: Vec<_> = seen.lock().unwrap().clone().into_iter().collect();
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        format!("{}; instances: {seen:#?}", tally.describe())
    }

    /// Waits (bounded by [`HANG_LIMIT`]) until `cond` holds; panics with what the load saw.
    async fn wait_for(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let polled = tokio::time::timeout(HANG_LIMIT, async {
            while !cond(self) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            polled.is_ok(),
            "timed out after {HANG_LIMIT:?} waiting for {what}; {}",
            Self::describe(self.load.tally(), &self.seen)
        );
    }

    /// Stops the callers and the reader, and takes a last report.
    async fn stop(self, client: &Client) -> Finished {
        let (tally, elapsed) = self.load.stop().await;
        self.reading.store(false, Ordering::SeqCst);
        within("the report reader to stop", self.reader)
            .await
            .expect("the reader panicked");
        fold(&self.seen, client.instance_report(FIXTURE).await);
        Finished {
            describe: Self::describe(&tally, &self.seen),
            seen: self.seen.lock().unwrap().clone(),
            tally,
            elapsed,
        }
    }
}

struct Finished {
    tally: Arc<Tally>,
    seen: HashMap<String, Seen>,
    elapsed: Duration,
    describe: String,
}

impl Finished {
    /// Attempts beyond one per call (retries; there are no hedges here), counted from the
    /// selector's per-instance figures less those at `baseline`; and failed attempts.
    fn retries(&self, baseline: &HashMap<String, Seen>) -> (u64, u64) {
        let base = |id: &str| baseline.get(id).cloned().unwrap_or_default();
        let attempts: u64 = self
            .seen
            .iter()
            .map(|(id, s)| s.calls - base(id).calls)
            .sum();
        let failures: u64 = self
            .seen
            .iter()
            .map(|(id, s)| s.failures - base(id).failures)
            .sum();
        (attempts.saturating_sub(self.tally.completed()), failures)
    }

    fn print(&self, phase: &str, baseline: &HashMap<String, Seen>) {
        let (retries, failed_attempts) = self.retries(baseline);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "resilience [{phase}]: {} calls in {:?}; longest call after the fault {:.1} ms \
             (longest overall {:.1} ms); retries ≈ {retries} (attempts beyond one per call), \
             failed attempts {failed_attempts}",
            self.tally.completed(),
            self.elapsed,
            ms(self.tally.slowest_after_mark()),
            ms(self.tally.slowest()),
        );
    }
}

async fn report_now(client: &Client) -> HashMap<String, Seen> {
    let seen = SeenMap::default();
    fold(&seen, client.instance_report(FIXTURE).await);
    let map = seen.lock().unwrap().clone();
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_by_name_survive_a_killed_server_and_an_unavailable_one() {
    let ca = new_ca();
    let dir = write_ca_dir(&ca);
    let n1 = spawn(dir.path().into(), "n1", &[]).await;
    let seed = n1.addr().to_string();
    let n2 = spawn(dir.path().into(), "n2", &["--seed", &seed]).await;
    let mut n3 = spawn(dir.path().into(), "n3", &["--seed", &seed]).await;
    let me: Node = node_builder(&ca, "caller")
        .seeds([seed.clone()])
        .client_only()
        .start()
        .await
        .expect("client node starts");
    converge(&me, "three fixtures", |r| r.instances(FIXTURE).len() == 3).await;
    let client = me.client();

    // 1. kill -9 of a server under load.
    let load = Watched::start(&client);
    load.wait_for("the warm-up calls, some to every server", |l| {
        l.completed() >= WARM_UP
            && ["fixture@n1", "fixture@n2", "fixture@n3"]
                .iter()
                .all(|id| l.seen(id).calls >= PER_INSTANCE_WARM_UP)
    })
    .await;
    load.load.mark();
    n3.kill();
    let at_kill = load.completed();
    // The whole time n3 is dead but still in the client's view, then some more.
    converge(&me, "n3's fixture gone", |r| {
        r.instances(FIXTURE).len() == 2
    })
    .await;
    load.load
        .wait_more(AFTER, "calls after n3 left the view")
        .await;
    let killed = load.stop(&client).await;
    killed.print("kill -9", &HashMap::new());
    let n3_seen = killed.seen.get("fixture@n3").cloned().unwrap_or_default();
    eprintln!(
        "resilience [kill -9]: {} calls after the kill; n3 as the client last saw it: {:?}",
        killed.tally.completed() - at_kill,
        n3_seen.last
    );
    assert_eq!(
        killed.tally.failed(),
        0,
        "calls failed around the kill -9 of n3: {}",
        killed.describe
    );
    assert!(killed.tally.completed() >= at_kill + AFTER);

    // 2. A server that answers every call with Unavailable.
    let n4 = spawn(dir.path().into(), "n4", &["--seed", &seed, "--unavailable"]).await;
    converge(&me, "n1, n2 and the refusing n4", |r| {
        let mut ids: Vec<String> = r.instances(FIXTURE).into_iter().map(|i| i.id).collect();
        ids.sort();
        ids == ["fixture@n1", "fixture@n2", "fixture@n4"]
    })
    .await;
    let baseline = report_now(&client).await;
    let load = Watched::start(&client);
    load.load.mark();
    load.wait_for("the client to eject n4", |l| {
        l.completed() >= WARM_UP && l.seen("fixture@n4").ejected
    })
    .await;
    // Its ejection ends, its one probe call fails (and is retried elsewhere): ejected again.
    load.wait_for("n4's failed probe and second ejection", |l| {
        l.seen("fixture@n4").ejections >= 2
    })
    .await;
    load.load
        .wait_more(AFTER, "calls after n4's second ejection")
        .await;
    let refused = load.stop(&client).await;
    refused.print("unavailable", &baseline);
    let n4_seen = refused.seen.get("fixture@n4").cloned().unwrap_or_default();
    eprintln!(
        "resilience [unavailable]: n4 as the client last saw it: {:?}",
        n4_seen.last
    );
    assert_eq!(
        refused.tally.failed(),
        0,
        "calls failed while n4 refused every call: {}",
        refused.describe
    );
    assert!(
        n4_seen.ejected && n4_seen.ejections >= 2,
        "n4 was not ejected, probed and ejected again: {}",
        refused.describe
    );
    assert!(
        n4_seen.calls >= 5 && n4_seen.failures == n4_seen.calls,
        "n4 took calls and failed every one: {n4_seen:?}"
    );

    within("client shutdown", me.shutdown()).await;
    drop((n1, n2, n3, n4));
}
