//! Deadlines: a caller that stops waiting gets `Timeout`, and a server does not run a handler
//! whose deadline passed while the call waited in the mailbox.

use std::time::Duration;

use colony::{Code, Origin};
use colony_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_past_the_deadline_is_a_timeout() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 4).await;
    let b = start_node(&ca, "b").await;
    let slow = || Sleep { ms: 300 };
    let deadline = Duration::from_millis(50);

    let local = expect_err(
        within(
            "local call",
            a.client().request(FIXTURE, slow()).timeout(deadline),
        )
        .await,
        "local slow call",
    );
    assert_eq!(local.code(), Code::Timeout, "{local}");
    assert_eq!(local.origin(), Origin::Client, "{local}");

    let client = b.client();
    for json in [false, true] {
        let call = client
            .request(FIXTURE, slow())
            .at(a.addr())
            .timeout(deadline);
        let call = if json { call.json() } else { call };
        let err = expect_err(within("remote call", call).await, "remote slow call");
        assert_eq!(err.code(), Code::Timeout, "json={json}: {err}");
        // The caller's timer and the server's deadline are the same length: either may win.
        assert!(
            matches!(err.origin(), Origin::Client | Origin::Server),
            "json={json}: {err}"
        );
    }

    // A deadline long enough is met.
    let done = b
        .client()
        .request(FIXTURE, Sleep { ms: 10 })
        .at(a.addr())
        .timeout(Duration::from_secs(20))
        .await;
    assert!(done.is_ok(), "{done:?}");

    b.shutdown().await;
    a.shutdown().await;
}

/// One instance, held busy by call A; call B waits behind it in the mailbox and times out; once
/// A is released, B's handler must never have run. (The remote form of this is
/// `the_remaining_time_travels_with_a_remote_call`, which waits for the server's own Timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_local_call_is_not_run() {
    let ca = new_ca();
    let node = start_node(&ca, "a").await;
    let fixture = start_fixture(&node, "single", 1).await;
    let client = node.client();

    let holder = node.client();
    let a_call = tokio::spawn(async move {
        holder
            .request("single", Hold { tag: "A".into() })
            .timeout(HANG_LIMIT)
            .await
    });
    let stats = fixture.stats.clone();
    wait_until(
        move || stats.started() == ["A"],
        "call A to occupy the instance",
    )
    .await;

    // In-process there is one deadline: when the caller gives up, B's reply channel closes and
    // the instance skips B when it reaches it.
    let call = client
        .request("single", Hold { tag: "B".into() })
        .timeout(Duration::from_millis(100));
    let b = expect_err(within("call B", call).await, "call B behind A");
    assert_eq!(b.code(), Code::Timeout, "{b}");

    fixture.stats.open_gate();
    let a = within("call A", a_call)
        .await
        .unwrap()
        .expect("call A succeeds");
    assert_eq!(a.tag, "A");

    // The instance handles its mailbox in order: once C is answered, B's turn has come and gone.
    let call = client.request("single", Echo { text: "C".into() });
    let c = within("call C", call).await.expect("call C succeeds");
    assert_eq!(c.text, "C");
    assert_eq!(fixture.stats.started(), ["A"], "B's handler never ran");
    assert_eq!(fixture.stats.finished(), 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remaining_time_travels_with_a_remote_call() {
    let ca = new_ca();
    // The server's own default is long; the caller's short deadline must still apply there.
    let a = node_builder(&ca, "a")
        .call_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let fixture = start_fixture(&a, "single", 1).await;
    let b = start_node(&ca, "b").await;
    let tool = raw_endpoint(&ca);

    let holder = b.client();
    let at = a.addr();
    let a_call = tokio::spawn(async move {
        holder
            .request("single", Hold { tag: "A".into() })
            .at(at)
            .timeout(HANG_LIMIT)
            .await
    });
    let stats = fixture.stats.clone();
    wait_until(
        move || stats.started() == ["A"],
        "call A to occupy the instance",
    )
    .await;

    // A hand-made call with a 100 ms budget queues behind A; the server itself answers Timeout
    // (a hand-made client has no timer of its own).
    let header = serde_json::to_vec(&serde_json::json!({
        "service": "single", "endpoint": "Fixture.Hold", "content_type": "application/json",
        "timeout_ms": 100, "request_id": 8,
    }))
    .unwrap();
    let reply = within(
        "hand-made call",
        raw_call(&tool, at, frames(&[&header, br#"{"tag":"B"}"#])),
    )
    .await
    .expect("the server answers");
    let error = reply.header.error.expect("an error reply");
    assert_eq!(error.code(), Code::Timeout, "{error}");
    assert_eq!(error.origin(), Origin::Server, "{error}");

    fixture.stats.open_gate();
    within("call A", a_call)
        .await
        .unwrap()
        .expect("call A succeeds");
    let c = b
        .client()
        .call_at(at, "single", Echo { text: "C".into() })
        .await
        .unwrap();
    assert_eq!(c.text, "C");
    assert_eq!(fixture.stats.started(), ["A"], "B's handler never ran");

    b.shutdown().await;
    a.shutdown().await;
}
