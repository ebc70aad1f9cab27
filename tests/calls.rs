//! Successful calls: in-process by name, between two nodes with bincode and JSON, and metadata
//! keys that ignore case on every path.

use colony::ContentType;
use colony_tests::*;

fn echo(text: &str) -> Echo {
    Echo { text: text.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_call_by_name_takes_the_in_process_path() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 2).await;
    assert_eq!(a.services(), vec![FIXTURE.to_string()]);

    let reply = within("local call", a.client().call(FIXTURE, echo("hi")))
        .await
        .expect("local call");
    assert_eq!(reply.text, "hi");
    assert!(!reply.remote, "a local call has no peer");
    assert_eq!(reply.content_type, None, "a local call is never encoded");
    assert_eq!(reply.service, FIXTURE);
    assert_eq!(reply.endpoint, "Fixture.Echo");

    // `.at(own address)` stays in-process too.
    let own = within(
        "call at own address",
        a.client().call_at(a.addr(), FIXTURE, echo("me")),
    )
    .await
    .expect("call at own address");
    assert_eq!(own.text, "me");
    assert!(!own.remote);
    assert_eq!(own.content_type, None);

    let count = a.client().call(FIXTURE, Count {}).await.unwrap();
    assert_eq!(count, 1);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_call_between_two_nodes_in_bincode_and_json() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 2).await;
    let b = start_node(&ca, "b").await;
    let client = b.client();

    let bin = within(
        "bincode call",
        client.call_at(a.addr(), FIXTURE, echo("over quic")),
    )
    .await
    .expect("bincode call");
    let json = within(
        "JSON call",
        client
            .request(FIXTURE, echo("over quic"))
            .at(a.addr())
            .json(),
    )
    .await
    .expect("JSON call");
    let explicit = within(
        "explicit bincode call",
        client
            .request(FIXTURE, echo("over quic"))
            .at(a.addr())
            .content_type(ContentType::Bincode),
    )
    .await
    .expect("explicit bincode call");

    for reply in [&bin, &json, &explicit] {
        assert_eq!(reply.text, "over quic");
        assert!(reply.remote, "the handler sees the calling node as peer");
        assert_eq!(reply.service, FIXTURE);
        assert_eq!(reply.endpoint, "Fixture.Echo");
    }
    assert_eq!(bin.content_type.as_deref(), Some("application/bincode"));
    assert_eq!(
        explicit.content_type.as_deref(),
        Some("application/bincode")
    );
    assert_eq!(json.content_type.as_deref(), Some("application/json"));

    // Same reply whatever the codec, apart from the codec itself.
    let strip = |r: &EchoReply| EchoReply {
        content_type: None,
        ..r.clone()
    };
    assert_eq!(strip(&bin), strip(&json));

    // A non-trivial reply type and a scalar reply type survive both codecs.
    let blob = client
        .call_at(a.addr(), FIXTURE, Blob { len: 3000 })
        .await
        .unwrap();
    let blob_json = client
        .request(FIXTURE, Blob { len: 3000 })
        .at(a.addr())
        .json()
        .await
        .unwrap();
    assert_eq!(blob.bytes, vec![0xab; 3000]);
    assert_eq!(blob, blob_json);
    let n: u64 = client
        .request(FIXTURE, Count {})
        .at(a.addr())
        .json()
        .await
        .unwrap();
    assert_eq!(n, 1, "the first Count call on a fresh instance");

    // Calls go both ways on one pair of nodes.
    let _fixture_b = start_fixture(&b, FIXTURE, 1).await;
    let back = within(
        "call back",
        a.client().call_at(b.addr(), FIXTURE, echo("back")),
    )
    .await
    .expect("call from a to b");
    assert_eq!(back.text, "back");
    assert!(back.remote);

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_remote_calls_all_get_their_own_reply() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 4).await;
    let b = start_node(&ca, "b").await;
    let addr = a.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let client = b.client();
        tasks.spawn(async move {
            let text = format!("call {i}");
            let call = client
                .request(FIXTURE, Echo { text: text.clone() })
                .at(addr);
            let reply = if i % 2 == 0 {
                call.await
            } else {
                call.json().await
            };
            (text, reply)
        });
    }
    let replies = within("64 concurrent calls", tasks.join_all()).await;
    assert_eq!(replies.len(), 64);
    for (text, reply) in replies {
        assert_eq!(reply.expect("concurrent call").text, text);
    }
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_keys_ignore_case_across_the_wire() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let b = start_node(&ca, "b").await;

    let local = a
        .client()
        .request(FIXTURE, echo("local"))
        .metadata("X-Trace", "t-local")
        .await
        .unwrap();
    let bin = b
        .client()
        .request(FIXTURE, echo("bincode"))
        .at(a.addr())
        .metadata("X-Trace", "t-bin")
        .metadata("Another-KEY", "v")
        .await
        .unwrap();
    let json = b
        .client()
        .request(FIXTURE, echo("json"))
        .at(a.addr())
        .json()
        .metadata("X-TRACE", "t-json")
        .await
        .unwrap();
    assert_eq!(local.trace.as_deref(), Some("t-local"));
    assert_eq!(bin.trace.as_deref(), Some("t-bin"));
    assert_eq!(json.trace.as_deref(), Some("t-json"));
    assert_eq!(local.metadata_keys, vec!["x-trace"]);
    assert_eq!(bin.metadata_keys, vec!["another-key", "x-trace"]);
    assert_eq!(json.metadata_keys, vec!["x-trace"]);

    // The last write of a key wins whatever its case.
    let twice = b
        .client()
        .request(FIXTURE, echo("twice"))
        .at(a.addr())
        .metadata("x-trace", "first")
        .metadata("X-Trace", "second")
        .await
        .unwrap();
    assert_eq!(twice.trace.as_deref(), Some("second"));
    assert_eq!(twice.metadata_keys, vec!["x-trace"]);

    // A JSON tool writing the key in mixed case by hand is read the same way.
    let raw = raw_endpoint(&ca);
    let header = json_header(
        FIXTURE,
        "Fixture.Echo",
        "application/json",
        5,
        &[("X-Trace", "t-tool")],
    );
    let reply = within(
        "hand-made call",
        raw_call(&raw, a.addr(), frames(&[&header, br#"{"text":"tool"}"#])),
    )
    .await
    .expect("hand-made call gets a reply");
    assert!(reply.header.error.is_none(), "{:?}", reply.header.error);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["trace"], "t-tool");
    assert_eq!(body["metadata_keys"], serde_json::json!(["x-trace"]));

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_with_a_taken_name_is_refused_and_the_first_keeps_serving() {
    let ca = new_ca();
    let (a, first) = start_node_with_fixture(&ca, "a", 1).await;
    let second = a
        .service(FIXTURE)
        .handler::<Echo>()
        .spawn(Fixture::default)
        .await;
    let err = expect_err(second.map(|_| ()), "duplicate name");
    assert_eq!(err.code(), colony::Code::Conflict);
    assert_eq!(err.origin(), colony::Origin::Client);
    assert_eq!(a.services(), [FIXTURE]);
    assert_eq!(first.service.live_instances(), 1);
    a.client()
        .call(
            FIXTURE,
            Echo {
                text: "still".into(),
            },
        )
        .await
        .expect("the first service still answers");
    a.shutdown().await;
}
