//! Stopping a node: `shutdown()` lets calls in flight finish, refuses new ones with an error
//! instead of a hang, and returns; dropping a node stops it at once without hanging anybody.

use std::time::Duration;

use colony::{Code, TransportConfig};
use colony_tests::*;

/// Size of the reply of one call in flight during shutdown: more than QUIC sends at once.
const BIG_REPLY: usize = 8 * 1024 * 1024;

/// A service on the stopping node that no held call occupies.
const OTHER: &str = "other";

/// A client node whose dials give up quickly, so calls to a stopped node fail fast.
async fn impatient_node(ca: &std::sync::Arc<colony::ClusterCa>, name: &str) -> colony::Node {
    node_builder(ca, name)
        .transport(TransportConfig {
            open_timeout: Duration::from_secs(1),
            ..TransportConfig::default()
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_calls_in_flight_and_refuses_new_ones() {
    let ca = new_ca();
    let (a, fixture) = start_node_with_fixture(&ca, "a", 4).await;
    let addr = a.addr();
    let b = impatient_node(&ca, "b").await;

    // Three calls in flight, held inside their handlers; one has a large reply, still being
    // delivered when the node closes its connections unless shutdown waits for it.
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..3 {
        let client = b.client();
        in_flight.spawn(async move {
            let tag = format!("in-flight-{i}");
            let len = if i == 0 { BIG_REPLY } else { 0 };
            let reply = client
                .request(
                    FIXTURE,
                    HoldBig {
                        tag: tag.clone(),
                        len,
                    },
                )
                .at(addr)
                .timeout(HANG_LIMIT)
                .await;
            (tag, len, reply)
        });
    }
    let stats = fixture.stats.clone();
    wait_until(move || stats.started_count() == 3, "three calls in flight").await;

    // A second service, none of whose instances is held, for a local call during shutdown.
    let _other = start_fixture(&a, OTHER, 1).await;
    let local_client = a.client();
    let shutdown = tokio::spawn(a.shutdown());

    // New calls start failing once shutdown has begun, with an error and not a hang.
    let client = b.client();
    let mut refused = None;
    let echo = || Echo {
        text: "late".into(),
    };
    let polled = tokio::time::timeout(HANG_LIMIT, async {
        loop {
            let call = client.request(FIXTURE, echo()).at(addr).timeout(HANG_LIMIT);
            if let Err(e) = within("a call during shutdown", call).await {
                refused = Some(e);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "calls kept succeeding during shutdown");
    let refused = refused.unwrap();
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    // And the next one too, on the existing connection...
    let again = expect_err(
        within(
            "another call during shutdown",
            client.call_at(addr, FIXTURE, echo()),
        )
        .await,
        "call during shutdown",
    );
    assert_eq!(again.code(), Code::Unavailable, "{again}");
    // ...and from a node that was not connected yet: its handshake is refused outright, not
    // left to run into its open timeout.
    let c = start_node(&ca, "c").await;
    let fresh = expect_err(
        within(
            "a new peer's call during shutdown",
            c.client().call_at(addr, FIXTURE, echo()),
        )
        .await,
        "new peer's call during shutdown",
    );
    assert_eq!(fresh.code(), Code::Unavailable, "{fresh}");
    assert!(
        !fresh.detail().contains("timed out"),
        "a new connection during shutdown must be refused, not ignored: {fresh}"
    );

    // Local calls are still served while shutdown waits: only remote calls are refused.
    let local = within(
        "a local call during shutdown",
        local_client.call(OTHER, Echo { text: "in".into() }),
    )
    .await
    .expect("a local call during shutdown is served");
    assert_eq!(local.text, "in");
    assert!(!local.remote, "served in-process");

    // The calls in flight were still waiting all along; now they finish, successfully.
    assert!(
        in_flight.try_join_next().is_none(),
        "a call in flight ended before its handler was released"
    );
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for calls in flight"
    );
    fixture.stats.open_gate();
    let results = within("calls in flight", in_flight.join_all()).await;
    for (tag, len, reply) in results {
        let reply = reply.unwrap_or_else(|e| panic!("{tag} failed across shutdown: {e}"));
        assert_eq!(reply.tag, tag);
        assert_eq!(reply.bytes.len(), len, "{tag}: the whole reply arrived");
    }
    within("shutdown", shutdown)
        .await
        .expect("shutdown returns");
    assert_eq!(fixture.stats.finished(), 3);

    // After shutdown the node is gone: an error, never a hang.
    let gone = expect_err(
        within(
            "a call after shutdown",
            b.client().call_at(addr, FIXTURE, echo()),
        )
        .await,
        "call after shutdown",
    );
    assert_eq!(gone.code(), Code::Unavailable, "{gone}");

    // Callers connected to a vanished node: dropping them does not wait for its goodbye.
    drop(c);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_of_an_idle_node_returns() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 2).await;
    let b = start_node(&ca, "b").await;
    b.client()
        .call_at(a.addr(), FIXTURE, Echo { text: "x".into() })
        .await
        .unwrap();
    within("idle shutdown", a.shutdown()).await;
    within("idle shutdown", b.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_node_stops_it_without_hanging() {
    let ca = new_ca();
    let (a, fixture) = start_node_with_fixture(&ca, "a", 2).await;
    let addr = a.addr();
    let b = impatient_node(&ca, "b").await;

    let client = b.client();
    let remote = tokio::spawn(async move {
        client
            .request(
                FIXTURE,
                Hold {
                    tag: "remote".into(),
                },
            )
            .at(addr)
            .timeout(HANG_LIMIT)
            .await
    });
    let local_client = a.client();
    let local = tokio::spawn(async move {
        local_client
            .request(
                FIXTURE,
                Hold {
                    tag: "local".into(),
                },
            )
            .timeout(HANG_LIMIT)
            .await
    });
    let stats = fixture.stats.clone();
    wait_until(move || stats.started_count() == 2, "two calls in flight").await;

    drop(a);

    // The remote caller learns at once that the connection is gone.
    let err = expect_err(
        within("remote call to a dropped node", remote)
            .await
            .unwrap(),
        "remote call to a dropped node",
    );
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    // New calls fail too.
    let err = expect_err(
        within(
            "call to a dropped node",
            b.client().call_at(addr, FIXTURE, Echo { text: "x".into() }),
        )
        .await,
        "call to a dropped node",
    );
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    // The local call's handler is still held; once released, the instance finishes its current
    // message and the local caller gets its reply.
    fixture.stats.open_gate();
    let held = within("local call on a dropped node", local)
        .await
        .unwrap()
        .expect("the local call in flight is answered");
    assert_eq!(held.tag, "local");

    b.shutdown().await;
}
