//! The call's context across services and middleware: nested calls inherit the deadline and
//! metadata, client layers stamp calls, serve layers refuse them. Helpers and the `svc`
//! service: `tests/support/selection.rs`.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::layer::{BoxFuture, ClientLayer, Next, Outgoing, ServeLayer, ServeNext};
use colony::{Code, Context, Error, Message, Origin};
use colony_tests::selection::*;
use colony_tests::*;

// ---------------------------------------------------------------------------------------------
// 8. Nested calls inherit the deadline and metadata
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_call_inherits_the_callers_deadline_and_metadata() {
    let ca = new_ca();
    let caller = start(&ca, "caller", None, |b| b).await;
    let front = start(&ca, "front", Some(caller.addr()), |b| b).await;
    let back = start(&ca, "back", Some(caller.addr()), |b| b).await;
    let front_knobs = Knobs::new("front");
    let back_knobs = Knobs::new("back");
    serve_as(&front, "front", &front_knobs, "1.0.0", &[], 1).await;
    serve(&back, &back_knobs).await;
    for node in [&caller, &front, &back] {
        converge(node, "front and back", |r| {
            r.instances("front").len() == 1 && r.instances(SVC).len() == 1
        })
        .await;
    }
    let client = caller.client();
    let relay = |within: bool, timeout_ms: Option<u64>, own: Option<(&str, &str)>| {
        client
            .request(
                "front",
                Relay {
                    service: SVC.to_string(),
                    within,
                    timeout_ms,
                    own_metadata: own.map(|(k, v)| (k.to_string(), v.to_string())),
                },
            )
            .timeout(Duration::from_secs(3))
            .metadata("x-trace", "t-1")
            .metadata("x-tenant", "acme")
    };

    // Within the caller's call: the 3 s deadline and the metadata carry over two hops.
    let r = within("relay", relay(true, None, None))
        .await
        .expect("relay");
    assert_eq!(
        (r.outer.node.as_str(), r.inner.node.as_str()),
        ("front", "back")
    );
    assert!(r.inner.remote);
    assert!(r.outer.remaining_ms <= 3_000, "{r:?}");
    assert!(
        r.inner.remaining_ms <= r.outer.remaining_ms,
        "the inner call got more time than its caller had: {r:?}"
    );
    assert!(r.inner.remaining_ms > 0, "{r:?}");
    assert_eq!(
        r.inner.metadata.get("x-trace").map(String::as_str),
        Some("t-1")
    );
    assert_eq!(
        r.inner.metadata.get("x-tenant").map(String::as_str),
        Some("acme")
    );

    // Control: without `.within` the inner call has the node's 30 s default and no metadata.
    let r = within("relay", relay(false, None, None))
        .await
        .expect("relay");
    assert!(r.inner.remaining_ms > 3_000, "{r:?}");
    assert!(r.inner.metadata.is_empty(), "{r:?}");

    // An entry set on the inner call wins over the inherited one.
    let r = within("relay", relay(true, None, Some(("x-trace", "inner"))))
        .await
        .expect("relay");
    assert_eq!(
        r.inner.metadata.get("x-trace").map(String::as_str),
        Some("inner")
    );
    assert_eq!(
        r.inner.metadata.get("x-tenant").map(String::as_str),
        Some("acme")
    );

    // An inner call with a shorter timeout of its own keeps it.
    let r = within("relay", relay(true, Some(500), None))
        .await
        .expect("relay");
    assert!(
        r.inner.remaining_ms <= 500,
        "the inner call's own 500 ms timeout was replaced by the caller's deadline: {r:?}"
    );
    // A longer one of its own is cut to the caller's deadline.
    let r = within("relay", relay(true, Some(20_000), None))
        .await
        .expect("relay");
    assert!(r.inner.remaining_ms <= r.outer.remaining_ms, "{r:?}");
    shutdown_all([back, front, caller]).await;
}

// ---------------------------------------------------------------------------------------------
// 9. Layers
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct StampStats {
    calls: AtomicU64,
    seen: Mutex<Vec<(String, String)>>,
}

/// Stamps every outgoing call with a token and a marker, and counts logical calls.
struct Stamp(Arc<StampStats>);

impl ClientLayer for Stamp {
    fn call<'a>(
        &'a self,
        call: &'a mut Outgoing,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.0.calls.fetch_add(1, SeqCst);
            self.0
                .seen
                .lock()
                .unwrap()
                .push((call.service().to_string(), call.endpoint().to_string()));
            call.metadata_mut().insert("token", "secret");
            call.metadata_mut().insert("x-layer", "stamp");
            next.run(call).await
        })
    }
}

/// Refuses served calls without the token.
struct Guard(Arc<AtomicU64>);

impl ServeLayer for Guard {
    fn serve<'a>(
        &'a self,
        call: &'a Context,
        next: ServeNext<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if call.metadata().get("token") != Some("secret") {
                self.0.fetch_add(1, SeqCst);
                return Err(Error::forbidden("no token"));
            }
            next.run().await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layers_stamp_calls_and_serve_layers_refuse_them() {
    let ca = new_ca();
    let stamp = Arc::new(StampStats::default());
    let refused = Arc::new(AtomicU64::new(0));
    let stamped = start(&ca, "stamped", None, |b| b.layer(Stamp(stamp.clone()))).await;
    let guarded = start(&ca, "guarded", Some(stamped.addr()), |b| {
        b.serve_layer(Guard(refused.clone()))
    })
    .await;
    let outsider = start(&ca, "outsider", Some(stamped.addr()), |b| b).await;
    let knobs = Knobs::new("guarded");
    serve(&guarded, &knobs).await;
    for node in [&stamped, &guarded, &outsider] {
        converge(node, "the guarded service", |r| r.instances(SVC).len() == 1).await;
    }

    // Through the client layer: the handler sees its metadata; the layer counts each call.
    for _ in 0..5 {
        let a = within("stamped call", stamped.client().call(SVC, Who {}))
            .await
            .expect("the token lets the call through");
        assert!(a.remote);
        assert_eq!(a.metadata.get("token").map(String::as_str), Some("secret"));
        assert_eq!(a.metadata.get("x-layer").map(String::as_str), Some("stamp"));
    }
    let json = within(
        "stamped JSON call",
        stamped
            .client()
            .call_json(SVC, Who::ENDPOINT, &serde_json::json!({})),
    )
    .await
    .expect("JSON calls go through the layers too");
    assert_eq!(json["metadata"]["x-layer"], "stamp");
    assert_eq!(stamp.calls.load(SeqCst), 6);
    assert!(stamp
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|(s, e)| s == SVC && e == Who::ENDPOINT));
    assert_eq!(knobs.executed(), 6);
    assert_eq!(refused.load(SeqCst), 0);

    // Without the token: refused by the serve layer, origin Server, the handler never runs.
    let err = expect_err(
        within("outsider call", outsider.client().call(SVC, Who {})).await,
        "no token",
    );
    assert_eq!(
        (err.code(), err.origin()),
        (Code::Forbidden, Origin::Server),
        "{err}"
    );
    assert_eq!(refused.load(SeqCst), 1);
    assert_eq!(knobs.executed(), 6);
    // The token set by hand passes.
    let a = within(
        "outsider call with token",
        outsider
            .client()
            .request(SVC, Who {})
            .metadata("token", "secret"),
    )
    .await
    .expect("token");
    assert_eq!(a.node, "guarded");

    // The serve layer guards in-process calls too.
    let err = expect_err(
        within("local call", guarded.client().call(SVC, Who {})).await,
        "no token, local",
    );
    assert_eq!(
        (err.code(), err.origin()),
        (Code::Forbidden, Origin::Server),
        "{err}"
    );
    assert_eq!(refused.load(SeqCst), 2);
    let a = within(
        "local call with token",
        guarded
            .client()
            .request(SVC, Who {})
            .metadata("token", "secret"),
    )
    .await
    .expect("local call with token");
    assert!(!a.remote);
    assert_eq!(knobs.executed(), 8);
    shutdown_all([outsider, guarded, stamped]).await;
}
