//! Bad pub/sub input: invalid subjects, events too large to cross, invalid patterns and
//! subscription terms, invalid JSON (and valid JSON for typed subscribers), and malformed broker
//! frames from a peer.

use std::sync::{Arc, Mutex};

use colony::{Code, Context, Error, Event, Origin, Subscriber};
use colony_tests::probe::*;
use colony_tests::*;
use serde::{Deserialize, Serialize};

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
    assert_eq!(p, published(2, 2));
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
        assert_eq!(p, published(2, 2));
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
