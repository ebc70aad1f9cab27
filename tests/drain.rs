//! Shutdown under load loses no accepted call.
//!
//! Node `a` runs two services with `Lifecycle` hooks, `early` then `slow` (2 instances each);
//! `slow`'s handler takes 20 ms and counts its starts and completions. 16 callers on node `b`
//! call `slow` pinned to `a` (no retries), and 4 callers on `a` itself call it in-process, each
//! until its first failure. While they keep both instances' mailboxes full, `a.shutdown()` runs.
//!
//! Every remote call then either succeeded or was refused by `a` with `Unavailable` before it
//! ran (never `Internal`, `Timeout`, a lost connection or a call dropped from a mailbox); every
//! handler that started completed, and exactly as many calls succeeded at the callers. Each
//! instance ran its `stopping` hook once, with no call after it, and `slow` (started last)
//! stopped, done with every call, before `early`.
//! In-process callers on `a` see the same: a call made once `a` closes is refused with
//! `Unavailable` (see `a_local_call_during_the_drain_is_refused_with_unavailable`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{Code, Context, Error, Handler, Lifecycle, Message, Node, Origin, TransportConfig};
use colony_tests::load::{Load, Until};
use colony_tests::*;
use serde::{Deserialize, Serialize};

/// Started first, stopped last.
const EARLY: &str = "early";
/// Started second, stopped first; the service the callers call.
const SLOW: &str = "slow";
/// Instances of each service.
const INSTANCES: usize = 2;
/// How long `slow`'s handler works.
const WORK_MS: u64 = 20;
/// Callers on node b (remote, pinned to a) and on node a (in-process).
const REMOTE_CALLERS: usize = 16;
const LOCAL_CALLERS: usize = 4;
/// Calls answered before the shutdown begins.
const WARM_UP: u64 = 60;

/// Works `ms` milliseconds and answers the number of handler runs its service had started.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    ms: u64,
}

impl Message for Work {
    type Reply = u64;
    const ENDPOINT: &'static str = "Drain.Work";
}

/// What a service's instances did, shared by its instances.
#[derive(Debug, Default)]
struct Probe {
    started: AtomicU64,
    completed: AtomicU64,
    /// Instances made by the factory.
    instances: AtomicU64,
    /// Handler runs in an instance whose `stopping` hook had run.
    after_stop: AtomicU64,
}

impl Probe {
    fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
}

/// One `stopping` hook run: which instance of which service, and how many handler runs of its
/// service had not finished then.
#[derive(Debug, Clone, PartialEq)]
struct Stopped {
    service: &'static str,
    instance: u64,
    unfinished: u64,
}

/// Every `stopping` hook run on the node, in order.
type StopLog = Arc<Mutex<Vec<Stopped>>>;

struct Worker {
    service: &'static str,
    instance: u64,
    probe: Arc<Probe>,
    stops: StopLog,
    /// Set by the `stopping` hook: no call may run after it.
    stopped: bool,
}

impl Handler<Work> for Worker {
    async fn handle(&mut self, req: Work, _ctx: &Context) -> Result<u64, Error> {
        if self.stopped {
            self.probe.after_stop.fetch_add(1, Ordering::SeqCst);
        }
        let n = self.probe.started.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(req.ms)).await;
        self.probe.completed.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }
}

impl Lifecycle for Worker {
    async fn stopping(&mut self) {
        self.stopped = true;
        let unfinished = self.probe.started() - self.probe.completed();
        self.stops.lock().unwrap().push(Stopped {
            service: self.service,
            instance: self.instance,
            unfinished,
        });
    }
}

async fn serve(node: &Node, service: &'static str, stops: &StopLog) -> Arc<Probe> {
    let probe = Arc::new(Probe::default());
    let (shared, stops) = (probe.clone(), stops.clone());
    node.service(service)
        .instances(INSTANCES)
        .lifecycle()
        .handler::<Work>()
        .spawn(move || Worker {
            service,
            instance: shared.instances.fetch_add(1, Ordering::SeqCst),
            probe: shared.clone(),
            stops: stops.clone(),
            stopped: false,
        })
        .await
        .expect("service starts");
    probe
}

/// How the callers' calls ended.
#[derive(Debug, Default)]
struct Outcomes {
    ok: AtomicU64,
    /// `Unavailable` from a's runtime, refused on arrival: a is shutting down, or the service
    /// has no instance taking calls any more.
    refused: AtomicU64,
    /// `Unavailable` from the calling side: the connection to a was lost (or a was gone).
    /// Must not happen: each caller stops at its first failure, a refusal while a still runs.
    unreachable: AtomicU64,
    /// Anything else, including a call that sat in a mailbox and was dropped unanswered
    /// (`Unavailable`, "the instance stopped before the call ran"): must not happen.
    other: Mutex<Vec<String>>,
}

/// The detail of the error a caller gets for a call dropped from a stopping instance's mailbox.
const DROPPED: &str = "before the call ran";

impl Outcomes {
    fn count(&self, reply: Result<u64, Error>) -> Result<(), String> {
        let e = match reply {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            Err(e) => e,
        };
        let described = format!("{:?} from {:?}: {}", e.code(), e.origin(), e.detail());
        let counter = match (e.code(), e.origin()) {
            (Code::Unavailable, Origin::Server) if !e.detail().contains(DROPPED) => &self.refused,
            (Code::Unavailable, Origin::Client) => &self.unreachable,
            _ => {
                self.other.lock().unwrap().push(described.clone());
                return Err(described);
            }
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Err(described)
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    fn describe(&self) -> String {
        format!(
            "ok {}, refused {}, unreachable {}, other {:?}",
            self.ok(),
            self.refused.load(Ordering::SeqCst),
            self.unreachable.load(Ordering::SeqCst),
            self.other.lock().unwrap()
        )
    }
}

/// `callers` tasks calling `slow` pinned to `at` from `node` until their first failure.
fn load(node: &Node, at: std::net::SocketAddr, callers: usize, outcomes: &Arc<Outcomes>) -> Load {
    let (client, outcomes) = (node.client(), outcomes.clone());
    Load::start(callers, Until::FirstFailure, move |_, _| {
        let (client, outcomes) = (client.clone(), outcomes.clone());
        async move {
            let reply = client
                .request(SLOW, Work { ms: WORK_MS })
                .at(at)
                .timeout(HANG_LIMIT)
                .await;
            outcomes.count(reply)
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_answers_every_accepted_call_and_stops_in_reverse_order() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    // b joins a's cluster, so a's shutdown begins by telling it a is leaving. Calls to a after
    // it closed fail fast instead of waiting out a long dial.
    let b = node_builder(&ca, "b")
        .seeds([a.addr().to_string()])
        .transport(TransportConfig {
            open_timeout: Duration::from_secs(1),
            ..TransportConfig::default()
        })
        .start()
        .await
        .expect("node b starts");
    let stops = StopLog::default();
    let early = serve(&a, EARLY, &stops).await;
    let slow = serve(&a, SLOW, &stops).await;
    let at = a.addr();
    converge(&b, "a's services", |r| r.instances(SLOW).len() == 1).await;

    let remote = Arc::new(Outcomes::default());
    let local = Arc::new(Outcomes::default());
    let mut remote_load = load(&b, at, REMOTE_CALLERS, &remote);
    let mut local_load = load(&a, at, LOCAL_CALLERS, &local);
    let (r, l) = (remote.clone(), local.clone());
    wait_until(
        move || r.ok() >= WARM_UP && l.ok() >= 1,
        "calls answered before the shutdown",
    )
    .await;
    assert!(
        remote_load.tally().failed() == 0 && local_load.tally().failed() == 0,
        "calls failed before the shutdown: remote {}; local {}",
        remote.describe(),
        local.describe()
    );

    let before = slow.completed();
    within("a's shutdown", a.shutdown()).await;
    remote_load
        .wait_all_stopped("remote callers to see a gone")
        .await;
    local_load
        .wait_all_stopped("local callers to see a gone")
        .await;

    let (started, completed) = (slow.started(), slow.completed());
    let stops = stops.lock().unwrap().clone();
    let report = format!(
        "handlers started {started}, completed {completed} ({} after the shutdown began); \
         remote callers: {}; local callers: {}; stopping hooks: {stops:?}",
        completed - before,
        remote.describe(),
        local.describe()
    );
    eprintln!("drain: {report}");

    for (who, outcomes) in [("remote", &remote), ("local", &local)] {
        assert!(
            outcomes.other.lock().unwrap().is_empty(),
            "a {who} call failed with something other than a refusal before it ran: {report}"
        );
    }
    for (who, outcomes) in [("remote", &remote), ("local", &local)] {
        assert_eq!(
            outcomes.unreachable.load(Ordering::SeqCst),
            0,
            "a {who} call lost its connection to a instead of being refused: {report}"
        );
    }
    assert_eq!(
        started, completed,
        "a handler that started did not complete: {report}"
    );
    assert_eq!(
        remote.ok() + local.ok(),
        completed,
        "every completed handler's caller got its reply, and no other call succeeded: {report}"
    );
    assert!(
        completed > before,
        "calls in flight and queued when the shutdown began were answered: {report}"
    );
    assert!(
        remote.refused.load(Ordering::SeqCst) > 0,
        "a refused new remote calls while it drained: {report}"
    );
    assert_eq!(early.started(), 0, "nobody called {EARLY}");

    // Each instance ran its hook once, after its mailbox was drained (no call ran in it
    // after); `slow`, started last, stopped first, and was done with every call by then.
    let order: Vec<&str> = stops.iter().map(|s| s.service).collect();
    assert_eq!(
        order,
        [SLOW, SLOW, EARLY, EARLY],
        "stopping hooks in the reverse of the start order: {report}"
    );
    for (service, probe) in [(SLOW, &slow), (EARLY, &early)] {
        let mut instances: Vec<u64> = stops
            .iter()
            .filter(|s| s.service == service)
            .map(|s| s.instance)
            .collect();
        instances.sort();
        assert_eq!(
            probe.instances.load(Ordering::SeqCst),
            INSTANCES as u64,
            "no instance of {service} restarted: {report}"
        );
        assert_eq!(
            instances,
            (0..INSTANCES as u64).collect::<Vec<_>>(),
            "one stopping hook per instance of {service}: {report}"
        );
        assert_eq!(
            probe.after_stop.load(Ordering::SeqCst),
            0,
            "a call ran in an instance of {service} after its stopping hook: {report}"
        );
    }
    assert_eq!(
        stops[1].unfinished, 0,
        "the last instance of {SLOW} to stop did so with calls still running: {report}"
    );

    b.shutdown().await;
}

/// A call made in-process while the node drains its services is refused like a remote one,
/// with `Unavailable`: the node is shutting down, the service is not missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_call_during_the_drain_is_refused_with_unavailable() {
    let ca = new_ca();
    let (a, fixture) = start_node_with_fixture(&ca, "a", 1).await;
    // Started after `fixture`, so drained before it: while a held `fixture` call keeps the
    // node in the drain, `other` is already out of the table.
    let _other = start_fixture(&a, "other", 1).await;
    let at = a.addr();
    let client = a.client();
    let held = hold_a_call(&a, &fixture).await;
    let shutdown = tokio::spawn(a.shutdown());

    let refused = within("an in-process call to fail during the drain", async {
        loop {
            let call = client
                .request("other", Echo { text: "x".into() })
                .at(at)
                .timeout(HANG_LIMIT);
            if let Err(e) = call.await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(
        !shutdown.is_finished(),
        "the held call keeps a in its drain"
    );
    fixture.stats.open_gate();
    let reply = within("the held call", held).await.expect("task");
    within("a's shutdown", shutdown).await.expect("shutdown");
    assert_eq!(reply.expect("the held call is answered").tag, "held");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
}

/// While a node drains, its health still answers (colony's own services are not refused) and
/// says `draining`: `colony health` exits 1 for it, not 2 (unreachable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_reports_itself_draining() {
    let ca = new_ca();
    let (a, fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let b = start_node(&ca, "b").await;
    let at = a.addr();
    let held = hold_a_call(&a, &fixture).await;
    let shutdown = tokio::spawn(a.shutdown());

    // Once a refuses calls (step 3 of its shutdown), its health still answers.
    within("a to refuse calls", async {
        loop {
            let client = b.client();
            let call = client.request(FIXTURE, Echo { text: "x".into() }).at(at);
            if let Err(e) = call.await {
                assert_eq!(e.code(), Code::Unavailable, "{e}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let health = b
        .client()
        .request(
            colony::introspect::NODE_SERVICE,
            colony::introspect::HealthQuery {},
        )
        .at(at)
        .timeout(HANG_LIMIT)
        .await
        .expect("health answers while the node drains");
    assert_eq!(health.status, colony::NodeStatus::Draining);
    let fixture_status = health
        .services
        .iter()
        .find(|s| s.name == FIXTURE)
        .map(|s| s.status);
    assert!(
        matches!(
            fixture_status,
            Some(colony::ServiceStatus::Running | colony::ServiceStatus::Stopping)
        ),
        "a service being drained is not reported failed: {fixture_status:?}"
    );
    assert_eq!(health.node, "a");
    assert!(
        !shutdown.is_finished(),
        "the held call keeps a in its drain"
    );
    fixture.stats.open_gate();
    within("the held call", held)
        .await
        .expect("task")
        .expect("the held call is answered");
    within("a's shutdown", shutdown).await.expect("shutdown");
    b.shutdown().await;
}

/// A `Hold` call to `node`'s fixture, pinned to it and started: it keeps the node in its drain
/// until the fixture's gate opens.
async fn hold_a_call(
    node: &Node,
    fixture: &FixtureService,
) -> tokio::task::JoinHandle<Result<Held, Error>> {
    let (client, at) = (node.client(), node.addr());
    let held = tokio::spawn(async move {
        client
            .request(FIXTURE, Hold { tag: "held".into() })
            .at(at)
            .timeout(HANG_LIMIT)
            .await
    });
    let stats = fixture.stats.clone();
    wait_until(move || stats.started_count() == 1, "the held call to start").await;
    held
}
