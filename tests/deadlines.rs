//! Deadlines: a caller that stops waiting gets `Timeout`, and a server does not run a handler
//! whose deadline passed while the call waited in the mailbox.

use std::time::Duration;

use colony::{Code, Node, Origin};
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
/// A is released, B's handler must never have run.
async fn expired_call_is_not_run(server: &Node, caller: &Node, remote: bool) {
    let fixture = start_fixture(server, "single", 1).await;
    let at = server.addr();
    let client = caller.client();

    let holder = caller.client();
    let a_call = tokio::spawn(async move {
        let call = holder
            .request("single", Hold { tag: "A".into() })
            .timeout(HANG_LIMIT);
        if remote {
            call.at(at).await
        } else {
            call.await
        }
    });
    let stats = fixture.stats.clone();
    wait_until(
        move || stats.started() == ["A"],
        "call A to occupy the instance",
    )
    .await;

    let b_timeout = Duration::from_millis(100);
    let b_sent = tokio::time::Instant::now();
    let call = client
        .request("single", Hold { tag: "B".into() })
        .timeout(b_timeout);
    let b = expect_err(
        within("call B", if remote { call.at(at) } else { call }).await,
        "call B behind A",
    );
    assert_eq!(b.code(), Code::Timeout, "{b}");
    if remote {
        // The server counts B's budget from when B's header *arrived*, so its deadline falls a
        // little after the caller's; the server does not learn that the caller gave up. Release
        // A only once the server's deadline for B has surely passed too. (Locally there is one
        // deadline: the caller dropping the call already withdrew it.)
        tokio::time::sleep_until(b_sent + 3 * b_timeout).await;
    }

    fixture.stats.open_gate();
    let a = within("call A", a_call)
        .await
        .unwrap()
        .expect("call A succeeds");
    assert_eq!(a.tag, "A");

    // The instance handles its mailbox in order: once C is answered, B's turn has come and gone.
    let call = client.request("single", Echo { text: "C".into() });
    let c = within("call C", if remote { call.at(at) } else { call })
        .await
        .expect("call C succeeds");
    assert_eq!(c.text, "C");
    assert_eq!(fixture.stats.started(), ["A"], "B's handler never ran");
    assert_eq!(fixture.stats.finished(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_local_call_is_not_run() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    expired_call_is_not_run(&a, &a, false).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_remote_call_is_not_run() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = start_node(&ca, "b").await;
    expired_call_is_not_run(&a, &b, true).await;
    b.shutdown().await;
    a.shutdown().await;
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
