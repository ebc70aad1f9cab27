//! Gossip membership between nodes in one process: join, registry views, watch, call by name,
//! cluster ids, foreign CAs, garbage on the gossip path, graceful leave.

use std::sync::Arc;

use colony::{ClusterCa, Code, MembershipConfig, Node, Origin, RegistryEvent, TransportConfig};
use colony_quic::Endpoint;
use colony_tests::*;

async fn join(ca: &Arc<ClusterCa>, name: &str, seed: &Node) -> Node {
    node_builder(ca, name)
        .seeds([seed.addr().to_string()])
        .start()
        .await
        .expect("node starts")
}

fn instance_ids(node: &Node, service: &str) -> Vec<String> {
    node.registry()
        .instances(service)
        .into_iter()
        .map(|i| i.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_see_every_service_and_call_by_name() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = join(&ca, "b", &a).await;
    let c = join(&ca, "c", &a).await;
    start_fixture(&a, "alpha", 1).await;
    start_fixture(&b, "beta", 2).await;
    for node in [&a, &b, &c] {
        converge(node, "alpha and beta", |r| {
            r.services() == ["alpha", "beta"]
        })
        .await;
        converge(node, "three members", |r| r.members().len() == 3).await;
    }
    let beta = b.registry().instances("beta");
    assert_eq!(beta.len(), 1);
    assert_eq!(beta[0].id, "beta@b");
    assert_eq!(beta[0].node, "b");
    assert_eq!(beta[0].addr, b.addr());
    assert_eq!(beta[0].version, "1.0.0");
    assert_eq!(beta[0].actors, 2);
    assert!(beta[0].endpoints.contains(&"Fixture.Echo".to_string()));

    // c runs nothing: by name, the call crosses QUIC to the node that runs the service.
    let reply = c
        .client()
        .call("beta", Echo { text: "hi".into() })
        .await
        .expect("call by name");
    assert!(reply.remote, "the call reached b over the network");
    assert_eq!(reply.service, "beta");
    // a runs alpha itself: the local fast path serves it.
    let reply = a
        .client()
        .call("alpha", Echo { text: "hi".into() })
        .await
        .unwrap();
    assert!(!reply.remote);
    // JSON without Rust types, as the CLI does.
    let json = c
        .client()
        .call_json("alpha", "Fixture.Echo", &serde_json::json!({"text": "raw"}))
        .await
        .expect("json call by name");
    assert_eq!(json["text"], "raw");

    let err = expect_err(
        c.client().call("gamma", Echo { text: "?".into() }).await,
        "unknown",
    );
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.origin(), Origin::Client);
    for node in [c, b, a] {
        within("shutdown", node.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_leaves_every_view_and_calls_go_to_survivors() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = join(&ca, "b", &a).await;
    let c = join(&ca, "c", &a).await;
    start_fixture(&b, "svc", 1).await;
    start_fixture(&c, "svc", 1).await;
    converge(&a, "two instances", |r| r.instances("svc").len() == 2).await;

    // Dropping a node without shutdown is the in-process stand-in for a crash: no goodbye.
    drop(c);
    converge(&a, "c gone", |r| r.instances("svc").len() == 1).await;
    converge(&b, "c gone", |r| r.members().len() == 2).await;
    assert_eq!(instance_ids(&a, "svc"), ["svc@b"]);
    for _ in 0..4 {
        a.client()
            .call("svc", Echo { text: "x".into() })
            .await
            .expect("survivor answers");
    }

    // The same name comes back as a new incarnation and is routed to again.
    let c = join(&ca, "c", &a).await;
    start_fixture(&c, "svc", 1).await;
    converge(&a, "c back", |r| r.instances("svc").len() == 2).await;
    let member = a.members().into_iter().find(|m| m.name == "c").unwrap();
    assert_eq!(
        member.addr,
        c.addr(),
        "the new incarnation replaced the old one"
    );
    for node in [c, b, a] {
        within("shutdown", node.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gives_snapshot_then_deltas_and_coalesces_for_slow_consumers() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = join(&ca, "b", &a).await;
    start_fixture(&a, "first", 1).await;
    converge(&b, "first", |r| r.instances("first").len() == 1).await;

    let mut watch = b.registry().watch();
    let slow = b.registry().watch();
    let snapshot: Vec<String> = watch.snapshot().into_iter().map(|i| i.id).collect();
    assert_eq!(snapshot, ["first@a"]);

    let second = start_fixture(&a, "second", 1).await;
    match within("created event", watch.next()).await {
        Some(RegistryEvent::Created(i)) => assert_eq!(i.id, "second@a"),
        other => panic!("expected Created(second@a), got {other:?}"),
    }
    second.service.stop().await;
    match within("deleted event", watch.next()).await {
        Some(RegistryEvent::Deleted(i)) => assert_eq!(i.id, "second@a"),
        other => panic!("expected Deleted(second@a), got {other:?}"),
    }

    // The slow consumer slept through create+delete of "second" and a new "third": it gets
    // exactly the difference, nothing stale and nothing lost.
    start_fixture(&a, "third", 1).await;
    converge(&b, "third", |r| r.instances("third").len() == 1).await;
    let mut slow = slow;
    match within("slow consumer", slow.next()).await {
        Some(RegistryEvent::Created(i)) => assert_eq!(i.id, "third@a"),
        other => panic!("expected Created(third@a), got {other:?}"),
    }
    let ids: Vec<String> = slow.snapshot().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["first@a", "third@a"]);
    for node in [b, a] {
        within("shutdown", node.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_cluster_ids_never_merge() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = join(&ca, "b", &a).await;
    // x seeds to a but belongs to another cluster; y joins x's cluster through x.
    let x = node_builder(&ca, "x")
        .cluster("other")
        .seeds([a.addr().to_string()])
        .start()
        .await
        .unwrap();
    let y = node_builder(&ca, "y")
        .cluster("other")
        .seeds([x.addr().to_string()])
        .start()
        .await
        .unwrap();
    start_fixture(&x, "x-svc", 1).await;
    // Positive control: gossip works inside each cluster...
    converge(&y, "x-svc in its own cluster", |r| {
        r.instances("x-svc").len() == 1
    })
    .await;
    for node in [&a, &b, &x, &y] {
        converge(node, "its cluster's two members", |r| {
            r.members().len() == 2
        })
        .await;
    }
    // ...while x has been gossiping at a all along: a knows nothing of x or y, and x of a.
    let names = |n: &Node| n.members().into_iter().map(|m| m.name).collect::<Vec<_>>();
    assert_eq!(names(&a), ["a", "b"]);
    assert_eq!(names(&x), ["x", "y"]);
    assert!(a.registry().instances("x-svc").is_empty());
    for node in [y, x, b, a] {
        within("shutdown", node.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_a_cluster_certificate_cannot_join_or_inject_gossip() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    // One intruder from another cluster (neither side trusts the other), and an impostor that
    // trusts the cluster CA but shows a certificate it did not issue: only a's own check of the
    // client certificate keeps the impostor out.
    let intruder = node_builder(&new_ca(), "intruder")
        .seeds([a.addr().to_string()])
        .start()
        .await
        .unwrap();
    let impostor = Node::builder()
        .name("impostor")
        .listen("127.0.0.1:0")
        .identity(impostor_identity(&ca))
        .seeds([a.addr().to_string()])
        .start()
        .await
        .unwrap();
    start_fixture(&intruder, "evil", 1).await;
    start_fixture(&impostor, "evil", 1).await;
    // Garbage tagged as gossip from the impostor's certificate: if it got through, a would count
    // it as rejected (as it does for a member, see the next test).
    let raw = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &impostor_identity(&ca),
        TransportConfig::default(),
    )
    .unwrap();
    let forged = raw
        .send_oneway(a.addr(), bytes::Bytes::from_static(b"\x01forged gossip"))
        .await;

    // Positive control: a legitimate node joins through a meanwhile, over several gossip rounds
    // in which both outsiders keep gossiping at a.
    let b = join(&ca, "b", &a).await;
    converge(&a, "b", |r| r.members().len() == 2).await;
    converge(&b, "a", |r| r.members().len() == 2).await;
    let names: Vec<String> = a.members().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(a.registry().instances("evil").is_empty());
    assert_eq!(
        a.gossip_stats().rejected,
        0,
        "forged bytes reached gossip ({forged:?})"
    );
    assert_eq!(intruder.members().len(), 1, "the intruder sees only itself");
    assert_eq!(impostor.members().len(), 1, "the impostor sees only itself");
    for node in [b, impostor, intruder, a] {
        within("shutdown", node.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_gossip_path_does_not_disturb_the_cluster() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = join(&ca, "b", &a).await;
    converge(&a, "b", |r| r.members().len() == 2).await;
    // A member's certificate, but nonsense on the gossip path: a message over a's one-way size
    // limit (the sender allows more), untagged garbage, an empty stream, and tagged garbage.
    let raw = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("raw").unwrap(),
        TransportConfig {
            max_oneway: 256 * 1024,
            ..TransportConfig::default()
        },
    )
    .unwrap();
    // a stops the oversized stream; whether the sender notices in time does not matter.
    let oversized = raw
        .send_oneway(a.addr(), bytes::Bytes::from(vec![0x01; 200 * 1024]))
        .await;
    for payload in [
        &b"\x7fnot a known one-way kind"[..],
        &b""[..],
        &b"\x01\xff\xff\xff\xff garbage"[..],
    ] {
        raw.send_oneway(a.addr(), bytes::Bytes::copy_from_slice(payload))
            .await
            .expect("member certificate accepted");
    }
    wait_until(
        || a.gossip_stats().rejected >= 1,
        "the tagged garbage to be rejected",
    )
    .await;

    // The cluster still works: a new service on b reaches a, and calls by name go through.
    start_fixture(&b, "after", 1).await;
    converge(&a, "a service started after the garbage", |r| {
        r.instances("after").len() == 1
    })
    .await;
    a.client()
        .call("after", Echo { text: "ok".into() })
        .await
        .expect("call after garbage");
    // Only the tagged garbage reached chitchat: the rest was dropped before it.
    assert_eq!(
        a.gossip_stats().rejected,
        1,
        "oversized send: {oversized:?}"
    );
    for node in [b, a] {
        within("shutdown", node.shutdown()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_withdraws_instances_before_the_failure_detector_would() {
    let ca = new_ca();
    // A failure detector so lenient that only the graceful leave can explain a quick exit.
    let lenient = MembershipConfig {
        phi_threshold: 10_000.0,
        ..MembershipConfig::default()
    };
    let a = node_builder(&ca, "a")
        .membership(lenient.clone())
        .start()
        .await
        .unwrap();
    let b = node_builder(&ca, "b")
        .membership(MembershipConfig {
            seeds: vec![a.addr().to_string()],
            ..lenient
        })
        .start()
        .await
        .unwrap();
    start_fixture(&b, "leaving", 1).await;
    converge(&a, "b's service", |r| r.instances("leaving").len() == 1).await;
    within("b shutdown", b.shutdown()).await;
    // With phi 10 000 the detector would need over half an hour of silence; the leave is news.
    converge(&a, "b's instances withdrawn on shutdown", |r| {
        r.instances("leaving").is_empty()
    })
    .await;
    within("shutdown", a.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_node_stops_gossip_even_while_a_client_lives() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    start_fixture(&a, "svc", 1).await;
    let b = join(&ca, "b", &a).await;
    converge(&b, "a's service", |r| r.instances("svc").len() == 1).await;
    let client = a.client();
    let mut watch = a.registry().watch();
    drop(a);
    // Unread changes are still handed out; then the watch ends, though a client lives on.
    within("the watch to end", async {
        while watch.next().await.is_some() {}
    })
    .await;
    // Had a kept gossiping (its client holds its state), b would keep seeing it alive.
    converge(&b, "a gone", |r| r.members().len() == 1).await;
    let err = expect_err(
        client.call("svc", Echo { text: "x".into() }).await,
        "dropped",
    );
    assert_eq!(err.code(), Code::NotFound);
    within("shutdown", b.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_supervisor_gives_up_is_withdrawn_from_the_cluster() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = join(&ca, "b", &a).await;
    let fragile = a
        .service("fragile")
        .restart_policy(colony::RestartPolicy {
            max_restarts: 0,
            ..colony::RestartPolicy::default()
        })
        .handler::<Panic>()
        .spawn(Fixture::default)
        .await
        .unwrap();
    converge(&b, "fragile", |r| r.instances("fragile").len() == 1).await;
    let err = expect_err(b.client().call("fragile", Panic {}).await, "panic");
    assert_eq!(err.code(), Code::Internal);
    // No restart allowed: the supervisor stops, and the service leaves this node and the cluster.
    converge(&b, "fragile withdrawn", |r| {
        r.instances("fragile").is_empty()
    })
    .await;
    wait_until(|| a.services().is_empty(), "fragile removed on a").await;
    assert_eq!(fragile.live_instances(), 0);
    for node in [b, a] {
        within("shutdown", node.shutdown()).await;
    }
}
