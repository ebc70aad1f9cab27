//! Publish/subscribe between nodes in one process: delivery guarantees (every plain subscriber
//! once, a queue group once in all, at-least-once through panics, dead letters), subject
//! wildcards end to end, unsubscribing, slow subscribers under each overflow policy, and bad
//! input (subjects, patterns, sizes, JSON, undecodable events, malformed broker frames).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{
    ClusterCa, Code, ContentType, Context, DeadLetter, Error, Event, Node, Origin, Overflow,
    Published, Redelivery, RestartPolicy, ServiceRef, Subscriber, Subscribing, SubscriptionInfo,
    SubscriptionStats,
};
use colony_tests::*;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::Semaphore;

/// Events a subscription keeps in its service's mailboxes, per instance (the runtime's
/// `WINDOW_PER_INSTANCE`, with the default mailbox of 1024): with a handler stuck, at most this
/// many leave the subscription's buffer.
const WINDOW: usize = 64;

// ---------------------------------------------------------------------------------------------
// A subscriber that records its calls
// ---------------------------------------------------------------------------------------------

/// One call of a [`Probe`]'s handler.
#[derive(Debug, Clone)]
struct Call {
    id: u64,
    subject: String,
    attempt: u32,
    /// The event came from another node (`Context::peer`).
    remote: bool,
    /// `Context::content_type`: `None` when the value arrived without encoding.
    content_type: Option<ContentType>,
    /// The handler returned `Ok`.
    ok: bool,
}

/// The calls of a [`Probe`] service, shared by its instances and their restarts.
#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    /// Ids handled with `Ok`, in order.
    fn handled(&self) -> Vec<u64> {
        self.all()
            .into_iter()
            .filter(|c| c.ok)
            .map(|c| c.id)
            .collect()
    }

    fn handled_count(&self) -> usize {
        self.0.lock().unwrap().iter().filter(|c| c.ok).count()
    }

    fn push(&self, call: Call) {
        self.0.lock().unwrap().push(call);
    }
}

/// What a [`Probe`] does with a job.
#[derive(Debug, Clone, Copy, Default)]
enum Mode {
    /// Handles it.
    #[default]
    Ok,
    /// Panics on the first attempt of the ids the function picks.
    PanicFirst(fn(u64) -> bool),
    /// Fails every attempt with `Err`.
    Fail,
}

/// A subscriber that records every call, optionally waiting on a gate first.
#[derive(Debug, Clone, Default)]
struct Probe {
    calls: Calls,
    mode: Mode,
    /// Every call waits until the gate is closed (a closed semaphore is an open gate).
    gate: Option<Arc<Semaphore>>,
}

impl Probe {
    fn new(calls: &Calls) -> Self {
        Self {
            calls: calls.clone(),
            ..Self::default()
        }
    }
}

impl Subscriber<Job> for Probe {
    async fn handle(&mut self, job: Job, ctx: &Context) -> Result<(), Error> {
        if let Some(gate) = &self.gate {
            let _ = gate.acquire().await;
        }
        let fails = match self.mode {
            Mode::Ok => false,
            Mode::PanicFirst(pick) => pick(job.id) && ctx.attempt() == 1,
            Mode::Fail => true,
        };
        self.calls.push(Call {
            id: job.id,
            subject: ctx.subject().expect("an event has a subject").to_string(),
            attempt: ctx.attempt(),
            remote: ctx.peer().is_some(),
            content_type: ctx.content_type(),
            ok: !fails,
        });
        match self.mode {
            Mode::PanicFirst(_) if fails => {
                panic!("probe panics on the first attempt of job {}", job.id)
            }
            Mode::Fail => Err(Error::internal(format!("probe fails job {}", job.id))),
            _ => Ok(()),
        }
    }
}

/// Spawns `subscribing` with `probe`'s state.
async fn spawn_probe(subscribing: Subscribing<Probe>, probe: Probe) -> ServiceRef {
    subscribing
        .spawn(move || probe.clone())
        .await
        .expect("subscriber starts")
}

/// Runs service `name` on `node`: a [`Probe`] recording into `calls`, subscribed to `pattern`.
async fn subscribe(node: &Node, name: &str, pattern: &str, calls: &Calls) -> ServiceRef {
    spawn_probe(
        node.service(name).subscribe::<Job>(pattern),
        Probe::new(calls),
    )
    .await
}

/// A gate held closed until the test opens it.
fn gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

/// Starts nodes named `names`, the first one the others' seed, and waits until each sees all.
async fn cluster(ca: &Arc<ClusterCa>, names: &[&str]) -> Vec<Node> {
    let first = start_node(ca, names[0]).await;
    let seed = first.addr().to_string();
    let mut nodes = vec![first];
    for name in &names[1..] {
        let node = node_builder(ca, name)
            .seeds([seed.clone()])
            .start()
            .await
            .expect("node starts");
        nodes.push(node);
    }
    for node in &nodes {
        converge(node, "every member", |r| r.members().len() == names.len()).await;
    }
    nodes
}

/// Waits until every node in `nodes` sees `count` instances of each service in `services`.
async fn see(nodes: &[Node], services: &[&str], count: usize) {
    for node in nodes {
        for service in services {
            converge(node, &format!("{count} instances of {service}"), |r| {
                r.instances(service).len() == count
            })
            .await;
        }
    }
}

async fn shutdown(nodes: Vec<Node>) {
    for node in nodes {
        within("node shutdown", node.shutdown()).await;
    }
}

/// The counters of `service`'s subscription to `pattern` on its node.
fn stats(service: &ServiceRef, pattern: &str) -> SubscriptionStats {
    service
        .health()
        .expect("the service runs")
        .subscriptions
        .into_iter()
        .find(|s| s.pattern == pattern)
        .unwrap_or_else(|| panic!("no subscription to {pattern}"))
}

fn ids(range: std::ops::Range<u64>) -> BTreeSet<u64> {
    range.collect()
}

/// Asserts `handled` holds every id in `0..n` exactly once.
fn assert_exactly_once(handled: &[u64], n: u64, who: &str) {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for id in handled {
        *count.entry(*id).or_default() += 1;
    }
    let twice: Vec<u64> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        twice.is_empty(),
        "{who} handled ids more than once: {twice:?}"
    );
    let missing: Vec<u64> = (0..n).filter(|id| !count.contains_key(id)).collect();
    assert!(missing.is_empty(), "{who} never handled ids {missing:?}");
    assert_eq!(handled.len() as u64, n, "{who}: handled count");
}

// ---------------------------------------------------------------------------------------------
// 1. Plain subscribers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plain_subscriber_gets_every_event_exactly_once() {
    const N: u64 = 300;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b", "c"]).await;
    // Four subscribers of the same subject with different patterns, on every node (two on c).
    let subs = [
        (0, "on-a", "orders.*"),
        (1, "on-b", "orders.created"),
        (2, "on-c", "orders.>"),
        (2, "on-c-too", ">"),
    ];
    let mut recorded = Vec::new();
    for (node, name, pattern) in subs {
        let calls = Calls::default();
        let service = subscribe(&nodes[node], name, pattern, &calls).await;
        recorded.push((name, pattern, service, calls));
    }
    see(&nodes, &["on-a", "on-b", "on-c", "on-c-too"], 1).await;

    // From two nodes: the publisher's own subscribers get the value, the others a copy.
    for id in 0..N {
        let from = &nodes[(id % 2) as usize];
        let published = from
            .client()
            .publish("orders.created", Job { id })
            .await
            .unwrap_or_else(|e| panic!("publish {id}: {e}"));
        assert_eq!(
            published,
            Published {
                nodes: 3,
                subscriptions: 4
            },
            "one copy per node, one delivery per subscription"
        );
    }
    for node in &nodes[..2] {
        within("flush", node.client().flush(HANG_LIMIT))
            .await
            .expect("flush");
    }
    for (name, _, _, calls) in &recorded {
        wait_until(
            || calls.handled_count() >= N as usize,
            &format!("{name} to handle {N} events"),
        )
        .await;
    }
    for (name, pattern, service, calls) in &recorded {
        assert_exactly_once(&calls.handled(), N, name);
        let all = calls.all();
        assert!(all
            .iter()
            .all(|c| c.subject == "orders.created" && c.attempt == 1));
        // a and b publish half each: half come from another node to theirs, all to c's.
        let remote = all.iter().filter(|c| c.remote).count() as u64;
        let want = if *name == "on-a" || *name == "on-b" {
            N / 2
        } else {
            N
        };
        assert_eq!(remote, want, "{name}: events from another node");
        assert!(
            all.iter().all(|c| if c.remote {
                c.content_type == Some(ContentType::Bincode)
            } else {
                c.content_type.is_none()
            }),
            "{name}: copies from other nodes come as bincode, values from this one unencoded"
        );
        let s = stats(service, pattern);
        assert_eq!(
            (s.received, s.handled, s.failed, s.dropped),
            (N, N, 0, 0),
            "{name}: {s:?}"
        );
    }
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Queue groups
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_on_three_nodes_gets_each_event_once_spread_over_its_members() {
    const N: u64 = 300;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b", "c"]).await;
    let mut members = Vec::new();
    for node in &nodes {
        let calls = Calls::default();
        spawn_probe(
            node.service("workers")
                .subscribe::<Job>("jobs.>")
                .queue("workers"),
            Probe::new(&calls),
        )
        .await;
        members.push((node.name().to_string(), calls));
    }
    // A plain subscriber alongside still gets every event.
    let audit = Calls::default();
    subscribe(&nodes[1], "audit", "jobs.*", &audit).await;
    see(&nodes, &["workers"], 3).await;
    see(&nodes, &["audit"], 1).await;
    for node in &nodes {
        let infos: Vec<Vec<SubscriptionInfo>> = node
            .registry()
            .instances("workers")
            .into_iter()
            .map(|i| i.subscriptions)
            .collect();
        for info in infos {
            assert_eq!(
                info,
                [SubscriptionInfo {
                    pattern: "jobs.>".into(),
                    queue: Some("workers".into()),
                    at_least_once: false,
                }],
                "the registry shows each member's subscription"
            );
        }
    }

    for id in 0..N {
        let from = &nodes[if id % 2 == 0 { 0 } else { 2 }];
        let published = from
            .client()
            .publish("jobs.new", Job { id })
            .await
            .unwrap_or_else(|e| panic!("publish {id}: {e}"));
        assert_eq!(
            published.subscriptions, 2,
            "one member of the group and the plain subscriber"
        );
    }
    for node in &nodes {
        within("flush", node.client().flush(HANG_LIMIT))
            .await
            .expect("flush");
    }
    let total = || {
        members
            .iter()
            .map(|(_, c)| c.handled_count())
            .sum::<usize>()
    };
    wait_until(|| total() >= N as usize, "the group to handle every event").await;
    wait_until(
        || audit.handled_count() >= N as usize,
        "audit to handle every event",
    )
    .await;
    let all: Vec<u64> = members.iter().flat_map(|(_, c)| c.handled()).collect();
    assert_exactly_once(&all, N, "the queue group");
    for (node, calls) in &members {
        assert!(
            calls.handled_count() > 0,
            "the member on {node} got none: {:?}",
            members
                .iter()
                .map(|(n, c)| (n, c.handled_count()))
                .collect::<Vec<_>>()
        );
    }
    assert_exactly_once(&audit.handled(), N, "audit");
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 3. At-least-once through panics
// ---------------------------------------------------------------------------------------------

fn panics_on(id: u64) -> bool {
    id % 10 == 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_when_a_subscriber_panics() {
    const N: u64 = 60;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let policy = Redelivery {
        ack_wait: Duration::from_secs(10),
        max_attempts: 5,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
    };
    // Enough restarts that the panics never exhaust the budget.
    let restarts = RestartPolicy {
        max_restarts: 1000,
        ..RestartPolicy::default()
    };
    // One subscriber on the publisher's node, one on the other.
    let mut subscribers = Vec::new();
    for (node, name) in [(&nodes[0], "alo-here"), (&nodes[1], "alo-there")] {
        let calls = Calls::default();
        let service = spawn_probe(
            node.service(name)
                .restart_policy(restarts)
                .subscribe::<Job>("pay.*")
                .redelivery(policy),
            Probe {
                mode: Mode::PanicFirst(panics_on),
                ..Probe::new(&calls)
            },
        )
        .await;
        subscribers.push((name, service, calls));
    }
    see(&nodes, &["alo-here", "alo-there"], 1).await;

    for id in 0..N {
        let published = nodes[0]
            .client()
            .publish("pay.in", Job { id })
            .await
            .unwrap_or_else(|e| panic!("publish {id}: {e}"));
        assert_eq!(published.subscriptions, 2);
    }
    // Resolves once every delivery is acknowledged (or dead-lettered, which would show below).
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("every at-least-once delivery acknowledged");
    assert_eq!(nodes[0].health().broker.unacknowledged, 0);

    let panicked: BTreeSet<u64> = (0..N).filter(|id| panics_on(*id)).collect();
    for (name, service, calls) in &subscribers {
        let handled: BTreeSet<u64> = calls.handled().into_iter().collect();
        assert_eq!(handled, ids(0..N), "{name}: every id handled");
        let all = calls.all();
        // Each of these panics whenever it comes on a first attempt (others queued behind a
        // panic may fail their first attempt too, the instance gone before they ran).
        assert!(
            all.iter().any(|c| !c.ok && c.attempt == 1),
            "{name}: some handler panicked"
        );
        for id in &panicked {
            let ok = all
                .iter()
                .find(|c| c.id == *id && c.ok)
                .expect("handled later");
            assert!(
                ok.attempt > 1,
                "{name}: job {id} was handled on attempt {}, after a panic",
                ok.attempt
            );
        }
        let s = stats(service, "pay.*");
        assert!(s.at_least_once);
        assert!(
            s.failed >= panicked.len() as u64,
            "{name}: each panic fails an attempt: {s:?}"
        );
        assert_eq!(s.dropped, 0, "{name}: {s:?}");
        let panics = all.iter().filter(|c| !c.ok).count() as u64;
        wait_until(
            || service.restarts() == panics,
            &format!("{name}: one restart per panic ({panics})"),
        )
        .await;
    }
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Dead letters
// ---------------------------------------------------------------------------------------------

/// A dead letter as the morgue got it, with the subject it came on.
#[derive(Debug, Clone)]
struct Letter {
    on: String,
    letter: DeadLetter,
}

#[derive(Debug, Clone, Default)]
struct Morgue(Arc<Mutex<Vec<Letter>>>);

impl Subscriber<DeadLetter> for Morgue {
    async fn handle(&mut self, letter: DeadLetter, ctx: &Context) -> Result<(), Error> {
        self.0.lock().unwrap().push(Letter {
            on: ctx.subject().unwrap_or_default().to_string(),
            letter,
        });
        Ok(())
    }
}

impl Morgue {
    fn letters(&self) -> Vec<Letter> {
        self.0.lock().unwrap().clone()
    }
}

fn quick_retries(max_attempts: u32) -> Redelivery {
    Redelivery {
        ack_wait: Duration::from_secs(10),
        max_attempts,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_always_fails_is_dead_lettered_after_its_last_attempt() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b", "c"]).await;
    let doomed = Calls::default();
    let doomed_svc = spawn_probe(
        nodes[1]
            .service("doomed")
            .subscribe::<Job>("pay.*")
            .redelivery(quick_retries(3)),
        Probe {
            mode: Mode::Fail,
            ..Probe::new(&doomed)
        },
    )
    .await;
    let custom = Calls::default();
    spawn_probe(
        nodes[2]
            .service("doomed-custom")
            .subscribe::<Job>("refund.*")
            .redelivery(quick_retries(2))
            .dead_letter("dl.refunds"),
        Probe {
            mode: Mode::Fail,
            ..Probe::new(&custom)
        },
    )
    .await;
    let morgue = Morgue::default();
    let m = morgue.clone();
    nodes[0]
        .service("morgue")
        .subscribe::<DeadLetter>("colony.dead.doomed")
        .subscribe::<DeadLetter>("dl.refunds")
        .spawn(move || m.clone())
        .await
        .expect("dead-letter subscriber starts");
    see(&nodes, &["doomed", "doomed-custom", "morgue"], 1).await;

    nodes[0]
        .client()
        .publish("pay.now", Job { id: 7 })
        .await
        .expect("publish");
    nodes[0]
        .client()
        .publish("refund.now", Job { id: 8 })
        .await
        .expect("publish");
    wait_until(|| morgue.letters().len() >= 2, "two dead letters").await;
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("nothing left unacknowledged");

    let letters = morgue.letters();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let find = |service: &str| {
        letters
            .iter()
            .find(|l| l.letter.service == service)
            .unwrap_or_else(|| panic!("no dead letter from {service}: {letters:?}"))
            .clone()
    };
    let first = find("doomed");
    assert_eq!(
        first.on, "colony.dead.doomed",
        "the default dead-letter subject"
    );
    assert_eq!(first.letter.subject, "pay.now");
    assert_eq!(first.letter.attempts, 3);
    assert!(
        first.letter.error.contains("probe fails job 7"),
        "the last attempt's error: {:?}",
        first.letter.error
    );
    assert_eq!(first.letter.event::<Job>().expect("decodes"), Job { id: 7 });
    let second = find("doomed-custom");
    assert_eq!(second.on, "dl.refunds");
    assert_eq!(second.letter.subject, "refund.now");
    assert_eq!(second.letter.attempts, 2);
    assert_eq!(
        second.letter.event::<Job>().expect("decodes"),
        Job { id: 8 }
    );

    // Every attempt reached the handler, one after another, and failed.
    let attempts = |calls: &Calls| calls.all().iter().map(|c| c.attempt).collect::<Vec<_>>();
    assert_eq!(attempts(&doomed), [1, 2, 3]);
    assert_eq!(attempts(&custom), [1, 2]);
    assert_eq!(doomed.handled_count(), 0);
    let s = stats(&doomed_svc, "pay.*");
    assert_eq!((s.handled, s.failed), (0, 3), "{s:?}");
    assert_eq!(nodes[0].health().broker.unacknowledged, 0);
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Wildcards
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_one_token_or_the_rest_end_to_end() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b", "c"]).await;
    // (node, service, pattern)
    let subs: [(usize, &str, &str); 9] = [
        (0, "p-lit", "a"),
        (1, "p-one", "a.*"),
        (2, "p-rest", "a.>"),
        (0, "p-all", ">"),
        (1, "p-star", "*"),
        (2, "p-mid", "a.*.c"),
        (0, "p-pre", "*.b"),
        (1, "p-exact", "a.b"),
        (2, "p-deep", "*.*.>"),
    ];
    // Written out by hand, not computed with the matcher under test.
    let expected: [(&str, &[&str]); 10] = [
        ("a", &["p-lit", "p-all", "p-star"]),
        ("a.b", &["p-one", "p-rest", "p-all", "p-pre", "p-exact"]),
        ("a.b.c", &["p-rest", "p-all", "p-mid", "p-deep"]),
        ("a.x.c", &["p-rest", "p-all", "p-mid", "p-deep"]),
        ("a.b.c.d", &["p-rest", "p-all", "p-deep"]),
        ("a.bc", &["p-one", "p-rest", "p-all"]),
        ("b", &["p-all", "p-star"]),
        ("x.b", &["p-all", "p-pre"]),
        ("b.a", &["p-all"]),
        ("ab", &["p-all", "p-star"]),
    ];
    let mut probes = BTreeMap::new();
    for (node, name, pattern) in subs {
        let calls = Calls::default();
        subscribe(&nodes[node], name, pattern, &calls).await;
        probes.insert(name, (node, calls));
    }
    let names: Vec<&str> = subs.iter().map(|(_, n, _)| *n).collect();
    see(&nodes, &names, 1).await;

    // Every subject from every node: each node's own subscriptions and the others'.
    let mut want: BTreeMap<&str, Vec<String>> = names.iter().map(|n| (*n, vec![])).collect();
    let mut id = 0;
    for from in &nodes {
        for (subject, matching) in expected {
            let published = from
                .client()
                .publish(subject, Job { id })
                .await
                .unwrap_or_else(|e| panic!("publish to {subject}: {e}"));
            id += 1;
            let on: BTreeSet<usize> = matching.iter().map(|n| probes[n].0).collect();
            assert_eq!(
                published,
                Published {
                    nodes: on.len(),
                    subscriptions: matching.len()
                },
                "{subject} from {}: should reach {matching:?}",
                from.name()
            );
            for name in matching {
                want.get_mut(name).unwrap().push(subject.to_string());
            }
        }
    }
    for node in &nodes {
        within("flush", node.client().flush(HANG_LIMIT))
            .await
            .expect("flush");
    }
    for (name, subjects) in &want {
        let calls = &probes[name].1;
        wait_until(
            || calls.handled_count() >= subjects.len(),
            &format!("{name} to get {subjects:?}"),
        )
        .await;
        let mut got: Vec<String> = calls.all().into_iter().map(|c| c.subject).collect();
        got.sort();
        let mut subjects = subjects.clone();
        subjects.sort();
        assert_eq!(got, subjects, "what {name} received");
    }
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 6. Unsubscribing and leaving
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_subscriber_or_its_node_stops_its_deliveries() {
    let ca = new_ca();
    let mut nodes = cluster(&ca, &["a", "b", "c"]).await;
    let on_b = Calls::default();
    let on_b_svc = subscribe(&nodes[1], "leaving", "u.*", &on_b).await;
    let on_c = Calls::default();
    subscribe(&nodes[2], "on-leaver", "u.*", &on_c).await;
    // A queue group with members on b and c.
    let (g_b, g_c) = (Calls::default(), Calls::default());
    let g_b_svc = spawn_probe(
        nodes[1].service("g-b").subscribe::<Job>("g.*").queue("grp"),
        Probe::new(&g_b),
    )
    .await;
    spawn_probe(
        nodes[2].service("g-c").subscribe::<Job>("g.*").queue("grp"),
        Probe::new(&g_c),
    )
    .await;
    // The only subscriber of its subject.
    let solo = Calls::default();
    let solo_svc = subscribe(&nodes[1], "solo", "solo.*", &solo).await;
    see(&nodes, &["leaving", "on-leaver", "g-b", "g-c", "solo"], 1).await;
    let a = nodes[0].client();

    // Unsubscribe the only subscriber: once the registry no longer lists it, a publish reaches
    // no node, and nothing more is handled.
    a.publish("solo.x", Job { id: 0 }).await.unwrap();
    wait_until(
        || solo.handled() == [0],
        "the solo subscriber's first event",
    )
    .await;
    within("stop", solo_svc.stop()).await;
    see(&nodes, &["solo"], 0).await;
    for id in 1..20 {
        let p = a.publish("solo.x", Job { id }).await.unwrap();
        assert_eq!(p, Published::default(), "nobody subscribes any more");
    }
    assert_eq!(solo.handled(), [0]);
    assert!(solo_svc.health().is_none(), "the service is gone from b");

    let p = a.publish("u.1", Job { id: 1 }).await.unwrap();
    assert_eq!(
        p,
        Published {
            nodes: 2,
            subscriptions: 2
        }
    );
    wait_until(
        || on_b.handled_count() == 1 && on_c.handled_count() == 1,
        "both to get the first event",
    )
    .await;

    // Stop (unsubscribe) b's: once the cluster no longer lists it, nothing goes to b.
    within("stop", on_b_svc.stop()).await;
    see(&nodes, &["leaving"], 0).await;
    for id in 2..22 {
        let p = a.publish("u.x", Job { id }).await.unwrap();
        assert_eq!(
            p,
            Published {
                nodes: 1,
                subscriptions: 1
            },
            "only c's"
        );
        let p = nodes[1].client().publish("u.x", Job { id }).await.unwrap();
        assert_eq!(
            p,
            Published {
                nodes: 1,
                subscriptions: 1
            },
            "from b: only c's"
        );
    }
    wait_until(|| on_c.handled_count() == 41, "c to get every event").await;
    assert_eq!(on_b.handled(), [1], "b handled nothing after its stop");

    // The group's member on b stops: the other one gets every event.
    within("stop", g_b_svc.stop()).await;
    see(&nodes, &["g-b"], 0).await;
    for id in 0..20 {
        let p = a.publish("g.x", Job { id }).await.unwrap();
        assert_eq!(
            p,
            Published {
                nodes: 1,
                subscriptions: 1
            }
        );
    }
    wait_until(
        || g_c.handled_count() == 20,
        "the remaining member to get all",
    )
    .await;
    assert_eq!(g_b.handled_count(), 0);

    // c leaves the cluster: its subscriptions go with it.
    let c = nodes.pop().unwrap();
    within("c's shutdown", c.shutdown()).await;
    see(&nodes, &["on-leaver", "g-c"], 0).await;
    for id in 100..120 {
        let p = a.publish("u.x", Job { id }).await.unwrap();
        assert_eq!(p, Published::default(), "nobody subscribes any more");
        let p = a.publish("g.x", Job { id }).await.unwrap();
        assert_eq!(p, Published::default());
    }
    assert_eq!(on_c.handled_count(), 41);
    assert_eq!(g_c.handled_count(), 20);
    let broker = nodes[0].health().broker;
    assert_eq!(broker.unacknowledged, 0);
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Slow subscribers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_a_stuck_subscriber_within_its_buffer_and_never_blocks_the_publisher() {
    const N: u64 = 1000;
    const BUFFER: usize = 16;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let gate = gate();
    let mut slow = Vec::new();
    for (node, name) in [(&nodes[0], "slow-here"), (&nodes[1], "slow-there")] {
        let calls = Calls::default();
        let service = spawn_probe(
            node.service(name)
                .subscribe::<Job>("firehose")
                .buffer(BUFFER)
                .overflow(Overflow::DropOldest),
            Probe {
                gate: Some(gate.clone()),
                ..Probe::new(&calls)
            },
        )
        .await;
        slow.push((name, service, calls));
    }
    see(&nodes, &["slow-here", "slow-there"], 1).await;

    let mut most = (0, 0);
    for id in 0..N {
        // Never waits for room: a short deadline is never reached.
        let published = nodes[0]
            .client()
            .publish("firehose", Job { id })
            .timeout(Duration::from_millis(200))
            .await
            .unwrap_or_else(|e| panic!("publish {id} must not wait: {e}"));
        assert_eq!(published.subscriptions, 2);
        for (_, service, _) in &slow {
            let s = stats(service, "firehose");
            most = (most.0.max(s.buffered), most.1.max(s.in_handler));
        }
    }
    for (name, service, _) in &slow {
        // Settled: every event received, and each one either held or counted as dropped.
        wait_until(
            || {
                let s = stats(service, "firehose");
                most = (most.0.max(s.buffered), most.1.max(s.in_handler));
                s.received == N && s.buffered as u64 + s.in_handler as u64 + s.dropped == N
            },
            &format!("{name} to receive every event and hold or drop each"),
        )
        .await;
    }
    assert!(most.0 <= BUFFER, "buffered {} > {BUFFER}", most.0);
    assert!(
        most.1 <= WINDOW,
        "in the handler's mailbox {} > {WINDOW}",
        most.1
    );
    for (name, service, _) in &slow {
        let s = stats(service, "firehose");
        assert_eq!(s.handled, 0, "{name}: the gate is shut: {s:?}");
        assert!(
            s.dropped >= N - (BUFFER + WINDOW) as u64,
            "{name}: a stuck subscriber holds at most its buffer and window: {s:?}"
        );
    }

    gate.close();
    for (name, service, calls) in &slow {
        wait_until(
            || {
                let s = stats(service, "firehose");
                s.handled + s.dropped == N && s.buffered == 0 && s.in_handler == 0
            },
            &format!("{name} to handle what it kept"),
        )
        .await;
        let handled = calls.handled();
        assert!(
            handled.contains(&(N - 1)),
            "{name}: drop-oldest keeps the newest event"
        );
        assert!(
            handled.len() <= BUFFER + WINDOW,
            "{name}: handled {}",
            handled.len()
        );
        assert_eq!(handled.len() as u64, stats(service, "firehose").handled);
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_makes_the_publisher_time_out_when_a_local_subscriber_is_full() {
    const BUFFER: usize = 16;
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let gate = gate();
    let calls = Calls::default();
    let service = spawn_probe(
        a.service("blocking")
            .subscribe::<Job>("slow")
            .buffer(BUFFER),
        Probe {
            gate: Some(gate.clone()),
            ..Probe::new(&calls)
        },
    )
    .await;

    let mut taken = Vec::new();
    let mut refused = None;
    for id in 0..3000 {
        let published = a
            .client()
            .publish("slow", Job { id })
            .timeout(Duration::from_millis(300))
            .await;
        let s = stats(&service, "slow");
        assert!(s.buffered <= BUFFER, "{s:?}");
        assert!(s.in_handler <= WINDOW, "{s:?}");
        match published {
            Ok(p) => {
                assert_eq!(p.subscriptions, 1);
                taken.push(id);
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Timeout, "{e}");
                assert_eq!(e.origin(), Origin::Client, "{e}");
                assert!(e.detail().contains("blocking"), "names the subscriber: {e}");
                refused = Some(id);
                break;
            }
        }
    }
    let refused = refused.expect("a publish times out once the buffer and window are full");
    assert!(
        taken.len() >= BUFFER && taken.len() <= BUFFER + WINDOW,
        "the publisher waited after {} events (buffer {BUFFER}, window {WINDOW})",
        taken.len()
    );
    let s = stats(&service, "slow");
    assert_eq!(s.buffered, BUFFER, "full: {s:?}");
    assert_eq!(s.dropped, 0, "block never drops: {s:?}");

    gate.close();
    // One more after the refused one: once it is handled, every earlier one was (in order).
    let last = refused + 1;
    a.client()
        .publish("slow", Job { id: last })
        .await
        .expect("publishes again once the subscriber catches up");
    wait_until(
        || calls.handled().contains(&last),
        "the subscriber to catch up",
    )
    .await;
    let mut want = taken.clone();
    want.push(last);
    assert_eq!(
        calls.handled(),
        want,
        "every event taken is handled in order; the refused one ({refused}) is not"
    );
    let s = stats(&service, "slow");
    assert_eq!(
        (s.received, s.handled, s.dropped),
        (want.len() as u64, want.len() as u64, 0)
    );
    within("shutdown", a.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_loses_no_event_the_publisher_was_told_a_remote_subscriber_took() {
    const BUFFER: usize = 16;
    const N: u64 = 400;
    const PUBLISH_TIMEOUT: Duration = Duration::from_millis(200);
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let gate = gate();
    let calls = Calls::default();
    let service = spawn_probe(
        nodes[1]
            .service("blocking")
            .subscribe::<Job>("slow")
            .buffer(BUFFER),
        Probe {
            gate: Some(gate.clone()),
            ..Probe::new(&calls)
        },
    )
    .await;
    see(&nodes, &["blocking"], 1).await;

    let mut taken = Vec::new();
    let mut refused = 0;
    for id in 0..N {
        let published = nodes[0]
            .client()
            .publish("slow", Job { id })
            .timeout(PUBLISH_TIMEOUT)
            .await;
        let s = stats(&service, "slow");
        assert!(s.buffered <= BUFFER, "{s:?}");
        match published {
            Ok(_) => taken.push(id),
            Err(e) => {
                assert_eq!(e.code(), Code::Timeout, "{e}");
                refused += 1;
            }
        }
    }
    // The scenario: the subscriber stays stuck past every publish's deadline (a wait for
    // time itself, not for a condition).
    tokio::time::sleep(4 * PUBLISH_TIMEOUT).await;
    let s = stats(&service, "slow");
    eprintln!(
        "{} publishes taken, {refused} timed out; subscriber after the deadlines: {s:?}",
        taken.len(),
    );
    // Whatever the publisher was told was taken must reach the handler once it is free.
    gate.close();
    // A last event after them all: once it is handled, so is every earlier one that will be
    // (one publisher, one subscription: in order).
    let fence = N;
    nodes[0]
        .client()
        .publish("slow", Job { id: fence })
        .await
        .expect("publishes once the subscriber is free");
    wait_until(
        || calls.handled().contains(&fence),
        "the last event to be handled",
    )
    .await;
    let handled: BTreeSet<u64> = calls.handled().into_iter().collect();
    let lost: Vec<u64> = taken
        .iter()
        .filter(|id| !handled.contains(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} events the publisher was told were taken were never handled (and not counted: {:?}): {lost:?}",
        lost.len(),
        stats(&service, "slow")
    );
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 8. Nobody subscribes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_nobody_subscribes_to_is_ok_and_reaches_no_node() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    // Subscriptions to neighbouring subjects, here and there: the tables are not empty.
    let (here, there) = (Calls::default(), Calls::default());
    let here_svc = subscribe(&nodes[0], "here", "orders.created", &here).await;
    let there_svc = subscribe(&nodes[1], "there", "orders.*", &there).await;
    see(&nodes, &["here", "there"], 1).await;

    let client = nodes[0].client();
    for subject in [
        "nobody.here",
        "orders",
        "orders.created.eu",
        "created",
        "x.orders.created",
    ] {
        for id in 0..200 {
            let p = client
                .publish(subject, Job { id })
                .await
                .unwrap_or_else(|e| panic!("publish to {subject}: {e}"));
            assert_eq!(p, Published::default(), "{subject}");
        }
        let p = client
            .publish_json(subject, r#"{"id": 1}"#)
            .await
            .unwrap_or_else(|e| panic!("publish_json to {subject}: {e}"));
        assert_eq!(p, Published::default(), "{subject}");
    }
    within("flush", client.flush(HANG_LIMIT))
        .await
        .expect("nothing to flush");
    // A subscribed subject still goes through, and only it was received.
    let p = client
        .publish("orders.created", Job { id: 9 })
        .await
        .unwrap();
    assert_eq!(
        p,
        Published {
            nodes: 2,
            subscriptions: 2
        }
    );
    wait_until(
        || here.handled_count() == 1 && there.handled_count() == 1,
        "the subscribed subject's event",
    )
    .await;
    assert_eq!(stats(&here_svc, "orders.created").received, 1);
    assert_eq!(stats(&there_svc, "orders.*").received, 1);
    let broker = nodes[0].health().broker;
    assert_eq!((broker.unacknowledged, broker.lost_frames), (0, 0));
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 9. Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_subjects_are_bad_requests_that_say_why() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let calls = Calls::default();
    subscribe(&a, "everything", ">", &calls).await;
    let long = "a".repeat(257);
    let cases: [(&str, &str); 9] = [
        ("", "empty token"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a b", "not allowed"),
        ("a\tb", "not allowed"),
        ("a.*", "not allowed"),
        ("a.>", "not allowed"),
        (&long, "longer than 256"),
    ];
    let client = a.client();
    for (subject, why) in cases {
        for json in [false, true] {
            let published = if json {
                client.publish_json(subject, r#"{"id":1}"#).await
            } else {
                client.publish(subject, Job { id: 1 }).await
            };
            let err = expect_err(published, &format!("publish to {subject:?}"));
            assert_eq!(err.code(), Code::BadRequest, "{subject:?}: {err}");
            assert_eq!(err.origin(), Origin::Client, "{subject:?}: {err}");
            assert!(
                err.detail().contains("invalid subject") && err.detail().contains(why),
                "{subject:?}: the detail should say {why:?}: {err}"
            );
        }
    }
    // The longest subject allowed is fine.
    let longest = "a".repeat(256);
    let p = client.publish(&longest, Job { id: 2 }).await.unwrap();
    assert_eq!(p.subscriptions, 1);
    wait_until(|| calls.handled() == [2], "the one good event").await;
    within("shutdown", a.shutdown()).await;
}

/// An event whose size the test chooses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Big {
    id: u64,
    data: Vec<u8>,
}

impl Event for Big {}

#[derive(Debug, Clone, Default)]
struct BigSink(Arc<Mutex<Vec<(u64, usize)>>>);

impl Subscriber<Big> for BigSink {
    async fn handle(&mut self, ev: Big, _ctx: &Context) -> Result<(), Error> {
        self.0.lock().unwrap().push((ev.id, ev.data.len()));
        Ok(())
    }
}

impl BigSink {
    fn got(&self) -> Vec<(u64, usize)> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_1_mib_for_another_node_is_too_large_and_the_node_goes_on() {
    const MIB: usize = 1024 * 1024;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let (here, there) = (BigSink::default(), BigSink::default());
    let h = here.clone();
    nodes[0]
        .service("big-here")
        .subscribe::<Big>("big.here")
        .subscribe::<Big>("big.both")
        .spawn(move || h.clone())
        .await
        .unwrap();
    let t = there.clone();
    nodes[1]
        .service("big-there")
        .subscribe::<Big>("big.there")
        .subscribe::<Big>("big.both")
        .spawn(move || t.clone())
        .await
        .unwrap();
    see(&nodes, &["big-here", "big-there"], 1).await;
    let client = nodes[0].client();
    let big = |id, len| Big {
        id,
        data: vec![7; len],
    };

    for subject in ["big.there", "big.both"] {
        let err = expect_err(
            client.publish(subject, big(1, MIB + 1024)).await,
            &format!("a 1 MiB + 1 KiB event to {subject}"),
        );
        assert_eq!(err.code(), Code::TooLarge, "{err}");
        assert!(err.detail().contains("limit"), "says why: {err}");
    }
    // Just under the limit crosses (the id and the length prefix take 6 bytes).
    client
        .publish("big.there", big(2, MIB - 16))
        .await
        .expect("an event under 1 MiB crosses");
    // A value for this node's subscribers only is never encoded: no limit.
    client
        .publish("big.here", big(3, 2 * MIB))
        .await
        .expect("a local event of 2 MiB");
    // The node and the link go on.
    let p = client.publish("big.both", big(4, 10)).await.unwrap();
    assert_eq!(
        p,
        Published {
            nodes: 2,
            subscriptions: 2
        }
    );
    wait_until(
        || there.got().len() == 2 && here.got().len() == 2,
        "the events after the refused ones",
    )
    .await;
    // The refused publishes reached nobody (one fails whole, before anything is sent): each
    // subscription delivers in publish order, so they would have come before the later ones.
    // (Two subscriptions of one service are not ordered with each other: sorted.)
    let sorted = |mut got: Vec<(u64, usize)>| {
        got.sort();
        got
    };
    assert_eq!(sorted(here.got()), [(3, 2 * MIB), (4, 10)]);
    assert_eq!(sorted(there.got()), [(2, MIB - 16), (4, 10)]);
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_patterns_and_subscription_terms_fail_the_spawn() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let calls = Calls::default();
    for pattern in [
        "a.b*", "a..b", "", "a b", "a.>.b", ">.a", "*a", "a.", "a.\n",
    ] {
        let spawned = a
            .service("bad-pattern")
            .subscribe::<Job>(pattern)
            .spawn({
                let probe = Probe::new(&calls);
                move || probe.clone()
            })
            .await;
        let err = expect_err(spawned, &format!("spawn with pattern {pattern:?}"));
        assert_eq!(err.code(), Code::BadRequest, "{pattern:?}: {err}");
        assert!(
            err.detail().contains("invalid subscription pattern")
                && err.detail().contains("bad-pattern"),
            "{pattern:?}: {err}"
        );
    }
    // A second subscription with a bad pattern fails the whole service.
    let err = expect_err(
        a.service("half-bad")
            .subscribe::<Job>("fine.*")
            .subscribe::<Job>("not fine")
            .spawn({
                let probe = Probe::new(&calls);
                move || probe.clone()
            })
            .await,
        "spawn with a second bad pattern",
    );
    assert_eq!(err.code(), Code::BadRequest, "{err}");
    let err = expect_err(
        a.service("bad-dl")
            .subscribe::<Job>("x")
            .at_least_once()
            .dead_letter("dead.*")
            .spawn({
                let probe = Probe::new(&calls);
                move || probe.clone()
            })
            .await,
        "spawn with a wildcard dead-letter subject",
    );
    assert_eq!(err.code(), Code::BadRequest, "{err}");
    assert!(err.detail().contains("dead-letter"), "{err}");
    for queue in ["", "has space"] {
        let err = expect_err(
            a.service("bad-queue")
                .subscribe::<Job>("x")
                .queue(queue)
                .spawn({
                    let probe = Probe::new(&calls);
                    move || probe.clone()
                })
                .await,
            &format!("spawn with queue {queue:?}"),
        );
        assert_eq!(err.code(), Code::BadRequest, "{err}");
        assert!(err.detail().contains("queue group"), "{err}");
    }
    // None of them runs or is advertised; a good one still spawns.
    for name in ["bad-pattern", "half-bad", "bad-dl", "bad-queue"] {
        assert!(a.registry().instances(name).is_empty(), "{name}");
        assert!(
            !a.health().services.iter().any(|s| s.name == name),
            "{name}"
        );
    }
    subscribe(&a, "good", "a.b.>", &calls).await;
    let p = a.client().publish("a.b.c", Job { id: 1 }).await.unwrap();
    assert_eq!(p.subscriptions, 1);
    within("shutdown", a.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_json_refuses_invalid_json() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let calls = Calls::default();
    subscribe(&a, "json", "j", &calls).await;
    for bad in [
        "",
        "{not json",
        r#"{"id": 1"#,
        "{\"id\": 1} trailing",
        "\u{0}",
    ] {
        let err = expect_err(
            a.client().publish_json("j", bad).await,
            &format!("publish_json {bad:?}"),
        );
        assert_eq!(err.code(), Code::BadRequest, "{bad:?}: {err}");
        assert!(err.detail().contains("not valid JSON"), "{bad:?}: {err}");
    }
    // Refused before anything was sent: the next good one is the first handled.
    a.client()
        .publish_json("j", r#"{"id": 5}"#)
        .await
        .expect("valid JSON");
    wait_until(|| calls.handled_count() == 1, "the valid event").await;
    assert_eq!(calls.handled(), [5]);
    within("shutdown", a.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_json_reaches_typed_subscribers_here_and_on_other_nodes() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let (here, there) = (Calls::default(), Calls::default());
    let here_svc = subscribe(&nodes[0], "json-here", "j.*", &here).await;
    let there_svc = subscribe(&nodes[1], "json-there", "j.*", &there).await;
    see(&nodes, &["json-here", "json-there"], 1).await;
    for id in 0..5 {
        let p = nodes[0]
            .client()
            .publish_json("j.x", format!(r#"{{"id": {id}}}"#))
            .await
            .expect("publish_json");
        assert_eq!(
            p,
            Published {
                nodes: 2,
                subscriptions: 2
            }
        );
    }
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("flush");
    for (name, service, calls) in [("here", &here_svc, &here), ("there", &there_svc, &there)] {
        wait_until(
            || {
                let s = stats(service, "j.*");
                s.handled + s.dropped + s.failed >= 5
            },
            &format!("{name} to take the five events"),
        )
        .await;
        let s = stats(service, "j.*");
        assert_eq!(
            calls.handled(),
            [0, 1, 2, 3, 4],
            "typed subscriber {name} decodes JSON events: {s:?}"
        );
    }
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_event_is_counted_and_the_subscriber_goes_on() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let morgue = Morgue::default();
    let m = morgue.clone();
    nodes[0]
        .service("morgue")
        .subscribe::<DeadLetter>("colony.dead.>")
        .spawn(move || m.clone())
        .await
        .unwrap();
    // At-most-once and at-least-once, on the publisher's node and on the other.
    let mut subs = Vec::new();
    for (node, name, alo) in [
        (0, "amo-here", false),
        (1, "amo-there", false),
        (0, "alo-here", true),
        (1, "alo-there", true),
    ] {
        let calls = Calls::default();
        let mut subscribing = nodes[node].service(name).subscribe::<Job>("shape.*");
        if alo {
            subscribing = subscribing.redelivery(quick_retries(2));
        }
        let service = spawn_probe(subscribing, Probe::new(&calls)).await;
        subs.push((name, alo, service, calls));
    }
    see(
        &nodes,
        &["morgue", "amo-here", "amo-there", "alo-here", "alo-there"],
        1,
    )
    .await;

    let wrong = r#"{"name": "not a job"}"#;
    let p = nodes[0]
        .client()
        .publish_json("shape.wrong", wrong)
        .await
        .expect("valid JSON is published whatever its shape");
    assert_eq!(p.subscriptions, 4);
    for (name, alo, service, _) in &subs {
        wait_until(
            || {
                let s = stats(service, "shape.*");
                if *alo {
                    s.failed >= 2
                } else {
                    s.dropped >= 1
                }
            },
            &format!("{name} to count the undecodable event"),
        )
        .await;
    }
    wait_until(
        || morgue.letters().len() >= 2,
        "the at-least-once ones dead-lettered",
    )
    .await;
    let mut letters = morgue.letters();
    letters.sort_by(|x, y| x.letter.service.cmp(&y.letter.service));
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, service) in letters.iter().zip(["alo-here", "alo-there"]) {
        assert_eq!(letter.letter.service, service);
        assert_eq!(letter.on, format!("colony.dead.{service}"));
        assert_eq!(letter.letter.subject, "shape.wrong");
        assert_eq!(letter.letter.attempts, 2);
        assert!(
            letter.letter.error.contains("decode"),
            "the error says it did not decode: {:?}",
            letter.letter.error
        );
        assert_eq!(letter.letter.content_type, ContentType::Json);
        assert_eq!(
            letter.letter.body,
            wrong.as_bytes(),
            "the event as published"
        );
    }

    // Each goes on with the next event.
    nodes[0]
        .client()
        .publish("shape.right", Job { id: 42 })
        .await
        .unwrap();
    for (name, alo, service, calls) in &subs {
        wait_until(
            || calls.handled() == [42],
            &format!("{name} to handle the next event"),
        )
        .await;
        let s = stats(service, "shape.*");
        assert_eq!(s.handled, 1, "{name}: {s:?}");
        if *alo {
            assert_eq!((s.failed, s.dropped), (2, 0), "{name}: {s:?}");
        } else {
            assert_eq!((s.failed, s.dropped), (0, 1), "{name}: {s:?}");
        }
    }
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("flush");
    shutdown(nodes).await;
}

/// One broker frame: its length, then its contents.
fn link_frame(contents: &[u8]) -> Vec<u8> {
    let mut out = (contents.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(contents);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_broker_frames_are_counted_and_the_node_goes_on() {
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    let calls = Calls::default();
    subscribe(&nodes[1], "target", "t.*", &calls).await;
    see(&nodes, &["target"], 1).await;
    let b = nodes[1].addr();
    assert_eq!(nodes[1].health().broker.malformed_frames, 0);

    // A broker link opened by hand (a peer with a cluster certificate) carrying garbage.
    let raw = raw_endpoint(&ca);
    let mut link = raw.open_uni(b).await.expect("open a one-way stream");
    let mut bytes = vec![0x02];
    let garbage: [&[u8]; 5] = [
        &[],                                      // empty
        &[9],                                     // unknown kind
        &[0, 0, 0, 0, 200],                       // event header longer than the frame
        &[0, 0, 0, 0, 3, 0xff, 0xfe, 0xfd, b'x'], // event header that does not decode
        &[1, 0xff, 0xff],                         // acks that do not decode
    ];
    for contents in garbage {
        bytes.extend(link_frame(contents));
    }
    link.write_all(&bytes).await.expect("write the frames");
    wait_until(
        || nodes[1].health().broker.malformed_frames == garbage.len() as u64,
        "b to count every malformed frame (the link goes on after each)",
    )
    .await;
    // A frame claiming more than any event may be ends that link, and only it.
    let mut huge = raw.open_uni(b).await.expect("open a one-way stream");
    let mut bytes = vec![0x02];
    bytes.extend(u32::MAX.to_be_bytes());
    bytes.extend([0u8; 64]);
    let _ = huge.write_all(&bytes).await;
    let _ = link.finish();
    let _ = huge.finish();

    // b goes on: events from a reach its subscriber, calls are answered.
    for id in 0..10 {
        let p = nodes[0].client().publish("t.x", Job { id }).await.unwrap();
        assert_eq!(p.nodes, 1);
    }
    wait_until(
        || calls.handled_count() == 10,
        "b's subscriber to get the events",
    )
    .await;
    assert_exactly_once(&calls.handled(), 10, "target");
    assert_eq!(
        nodes[1].health().broker.malformed_frames,
        garbage.len() as u64
    );
    shutdown(nodes).await;
}

// ---------------------------------------------------------------------------------------------
// 10. No encoding on the publisher's node
// ---------------------------------------------------------------------------------------------

/// Times a [`Counted`] was serialized, by anyone.
static SERIALIZED: AtomicU64 = AtomicU64::new(0);

/// An event that counts its serializations.
#[derive(Debug, Clone, Deserialize)]
struct Counted {
    id: u64,
}

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALIZED.fetch_add(1, Ordering::SeqCst);
        let mut st = s.serialize_struct("Counted", 1)?;
        st.serialize_field("id", &self.id)?;
        st.end()
    }
}

impl Event for Counted {}

#[derive(Debug, Clone, Default)]
struct CountedSink(Arc<Mutex<Vec<Delivered>>>);

/// A [`Counted`] as its subscriber got it: id, from another node, codec.
type Delivered = (u64, bool, Option<ContentType>);

impl Subscriber<Counted> for CountedSink {
    async fn handle(&mut self, ev: Counted, ctx: &Context) -> Result<(), Error> {
        self.0
            .lock()
            .unwrap()
            .push((ev.id, ctx.peer().is_some(), ctx.content_type()));
        Ok(())
    }
}

impl CountedSink {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_the_publishers_node_get_the_value_without_encoding() {
    const N: u64 = 100;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b", "c"]).await;
    // On the publisher's node: a plain, a queue group and an at-least-once subscription.
    let mut local = Vec::new();
    for name in ["plain", "grouped", "alo"] {
        let sink = CountedSink::default();
        let s = sink.clone();
        let mut subscribing = nodes[0].service(name).subscribe::<Counted>("counted");
        if name == "grouped" {
            subscribing = subscribing.queue("g");
        }
        if name == "alo" {
            subscribing = subscribing.at_least_once();
        }
        subscribing.spawn(move || s.clone()).await.unwrap();
        local.push(sink);
    }
    for id in 0..N {
        let p = nodes[0]
            .client()
            .publish("counted", Counted { id })
            .await
            .unwrap();
        assert_eq!(
            p,
            Published {
                nodes: 1,
                subscriptions: 3
            }
        );
    }
    within("flush", nodes[0].client().flush(HANG_LIMIT))
        .await
        .expect("the at-least-once ones acknowledged");
    for sink in &local {
        wait_until(|| sink.len() == N as usize, "the local subscribers").await;
        assert!(
            sink.0
                .lock()
                .unwrap()
                .iter()
                .all(|(_, remote, ct)| !remote && ct.is_none()),
            "in-process deliveries carry no codec"
        );
    }
    assert_eq!(
        SERIALIZED.load(Ordering::SeqCst),
        0,
        "a value published to subscribers on its own node is never serialized"
    );

    // Subscribers on two other nodes: one encoding per publish, however many nodes get it.
    let mut remote = Vec::new();
    for (node, name) in [(&nodes[1], "far-b"), (&nodes[2], "far-c")] {
        let sink = CountedSink::default();
        let s = sink.clone();
        node.service(name)
            .subscribe::<Counted>("counted")
            .spawn(move || s.clone())
            .await
            .unwrap();
        remote.push(sink);
    }
    see(&nodes[..1], &["far-b", "far-c"], 1).await;
    for id in N..2 * N {
        let p = nodes[0]
            .client()
            .publish("counted", Counted { id })
            .await
            .unwrap();
        assert_eq!(
            p,
            Published {
                nodes: 3,
                subscriptions: 5
            }
        );
    }
    for sink in &remote {
        wait_until(|| sink.len() == N as usize, "the remote subscribers").await;
        assert!(sink
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|(_, remote, ct)| *remote && *ct == Some(ContentType::Bincode)));
    }
    assert_eq!(
        SERIALIZED.load(Ordering::SeqCst),
        N,
        "encoded once per publish for the other nodes, never for this one"
    );
    shutdown(nodes).await;
}
