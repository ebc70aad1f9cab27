//! Who gets an event, between nodes in one process: every plain subscriber once, a queue group
//! once in all, subject wildcards end to end, nothing after an unsubscribe or a node's leave, no
//! node when nobody subscribes, and the value itself (never encoded) on the publisher's node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use colony::{ContentType, Context, Error, Event, Published, Subscriber, SubscriptionInfo};
use colony_tests::probe::*;
use colony_tests::*;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

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

    // From two nodes: the publisher's own subscribers get the value, the others a copy. One copy
    // per node, one delivery per subscription.
    for id in 0..N {
        let from = &nodes[(id % 2) as usize];
        publish_job(from, "orders.created", id, published(3, 4)).await;
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
    publish_jobs(&nodes[0], "solo.x", 1..20, Published::default()).await;
    assert_eq!(solo.handled(), [0]);
    assert!(solo_svc.health().is_none(), "the service is gone from b");

    publish_job(&nodes[0], "u.1", 1, published(2, 2)).await;
    wait_until(
        || on_b.handled_count() == 1 && on_c.handled_count() == 1,
        "both to get the first event",
    )
    .await;

    // Stop (unsubscribe) b's: once the cluster no longer lists it, nothing goes to b.
    within("stop", on_b_svc.stop()).await;
    see(&nodes, &["leaving"], 0).await;
    for id in 2..22 {
        // Only c's, from a and from b.
        publish_job(&nodes[0], "u.x", id, published(1, 1)).await;
        publish_job(&nodes[1], "u.x", id, published(1, 1)).await;
    }
    wait_until(|| on_c.handled_count() == 41, "c to get every event").await;
    assert_eq!(on_b.handled(), [1], "b handled nothing after its stop");

    // The group's member on b stops: the other one gets every event.
    within("stop", g_b_svc.stop()).await;
    see(&nodes, &["g-b"], 0).await;
    publish_jobs(&nodes[0], "g.x", 0..20, published(1, 1)).await;
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
    // Nobody subscribes any more.
    for id in 100..120 {
        publish_job(&nodes[0], "u.x", id, Published::default()).await;
        publish_job(&nodes[0], "g.x", id, Published::default()).await;
    }
    assert_eq!(on_c.handled_count(), 41);
    assert_eq!(g_c.handled_count(), 20);
    let broker = nodes[0].health().broker;
    assert_eq!(broker.unacknowledged, 0);
    shutdown(nodes).await;
}

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
        publish_jobs(&nodes[0], subject, 0..200, Published::default()).await;
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
    publish_job(&nodes[0], "orders.created", 9, published(2, 2)).await;
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
        assert_eq!(p, published(1, 3));
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
        assert_eq!(p, published(3, 5));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_node_subscribes_and_every_node_lists_the_subscriptions() {
    const N: u64 = 50;
    let ca = new_ca();
    let nodes = cluster(&ca, &["a", "b"]).await;
    // A client-only node (like `colony subscribe`) offers no service instance, but its
    // subscriptions are routed to all the same.
    let watcher = node_builder(&ca, "watcher")
        .seeds([nodes[0].addr().to_string()])
        .client_only()
        .start()
        .await
        .expect("client node starts");
    let calls = Calls::default();
    let _sub = spawn_probe(
        watcher
            .service("tail")
            .subscribe::<Job>("jobs.>")
            .queue("tails"),
        Probe::new(&calls),
    )
    .await;
    for node in &nodes {
        converge(node, "the client node's subscription", |r| {
            r.subscriptions().iter().any(|s| s.node == "watcher")
        })
        .await;
        assert!(
            node.registry().instances("tail").is_empty(),
            "no instance offered"
        );
        let listed = node.registry().subscriptions();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            (listed[0].service.as_str(), listed[0].addr),
            ("tail", watcher.addr())
        );
        assert_eq!(
            listed[0].info,
            SubscriptionInfo {
                pattern: "jobs.>".into(),
                queue: Some("tails".into()),
                at_least_once: false
            }
        );
    }
    for id in 0..N {
        publish_job(&nodes[(id % 2) as usize], "jobs.done", id, published(1, 1)).await;
    }
    wait_until(
        || calls.handled_count() == N as usize,
        "the client node's subscriber",
    )
    .await;
    assert_exactly_once(&calls.handled(), N, "tail");
    within("watcher shutdown", watcher.shutdown()).await;
    shutdown(nodes).await;
}
