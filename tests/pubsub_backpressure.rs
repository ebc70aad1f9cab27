//! Slow subscribers between nodes in one process: `DropOldest` keeps a stuck subscriber within
//! its buffer without ever blocking the publisher; `Block` makes the publisher time out (local
//! subscriber) and loses nothing it said was taken (remote subscriber).

use std::collections::BTreeSet;
use std::time::Duration;

use colony::{Code, Origin, Overflow};
use colony_tests::probe::*;
use colony_tests::*;

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
            Probe::gated(&calls, &gate),
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
        Probe::gated(&calls, &gate),
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
        Probe::gated(&calls, &gate),
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
