//! The wire protocol seen from a hand-made client: JSON tools, undecodable bodies, oversized
//! frames and garbage. Bad input ends only its own stream; the connection and the node go on.

use std::net::SocketAddr;

use bytes::Bytes;
use colony::{Code, Origin};
use colony_quic::Endpoint;
use colony_tests::*;

const ECHO: &str = "Fixture.Echo";

/// A good JSON call on a stream of `endpoint`'s pooled connection; returns the stream's index.
async fn healthy_json_call(endpoint: &Endpoint, addr: SocketAddr, id: u64) -> u64 {
    let header = json_header(FIXTURE, ECHO, "application/json", id, &[]);
    let reply = within(
        "healthy call",
        raw_call(
            endpoint,
            addr,
            frames(&[&header, br#"{"text":"still here"}"#]),
        ),
    )
    .await
    .expect("the node answers a normal call");
    assert_eq!(reply.format, HeaderFormat::Json);
    assert_eq!(reply.header.request_id, id);
    assert!(reply.header.error.is_none(), "{:?}", reply.header.error);
    let body: EchoReply = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body.text, "still here");
    reply.stream_index
}

/// Asserts that `reply` is a failed call with `code` decided by the server.
fn assert_refused(reply: &RawReply, code: Code, format: HeaderFormat, case: &str) {
    let error = reply
        .header
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("{case}: expected an error reply, got success"));
    assert_eq!(error.code(), code, "{case}: {error}");
    assert_eq!(error.origin(), Origin::Server, "{case}: {error}");
    assert_eq!(reply.format, format, "{case}: reply header format");
    assert!(
        reply.body.is_empty(),
        "{case}: a failed call has an empty body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_tool_calls_with_json_alone() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let tool = raw_endpoint(&ca);

    let header = json_header(FIXTURE, ECHO, "application/json", 42, &[]);
    let reply = within(
        "JSON tool call",
        raw_call(
            &tool,
            a.addr(),
            frames(&[&header, br#"{"text":"from a tool"}"#]),
        ),
    )
    .await
    .expect("reply");
    // The reply header is plain JSON text too.
    let head: serde_json::Value = serde_json::from_slice(&reply.header_bytes).unwrap();
    assert_eq!(head, serde_json::json!({"request_id": 42, "error": null}));
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["text"], "from a tool");
    assert_eq!(body["remote"], true);
    assert_eq!(body["content_type"], "application/json");

    // A content type with parameters names the same codec.
    let header = json_header(FIXTURE, ECHO, "application/json; charset=utf-8", 43, &[]);
    let reply = raw_call(&tool, a.addr(), frames(&[&header, br#"{"text":"x"}"#]))
        .await
        .expect("reply");
    assert!(reply.header.error.is_none(), "{:?}", reply.header.error);

    // A handler's refusal arrives as JSON the tool can read.
    let header = json_header(FIXTURE, "Fixture.Fail", "application/json", 44, &[]);
    let reply = raw_call(
        &tool,
        a.addr(),
        frames(&[&header, br#"{"code":409,"detail":"taken"}"#]),
    )
    .await
    .expect("reply");
    let head: serde_json::Value = serde_json::from_slice(&reply.header_bytes).unwrap();
    assert_eq!(
        head,
        serde_json::json!({
            "request_id": 44,
            "error": {"code": 409, "detail": "taken", "origin": "handler"}
        })
    );
    assert!(reply.body.is_empty());

    // The binary header form works by hand as well, and its reply comes back binary.
    let header = bincode_header(FIXTURE, ECHO, "application/bincode", 45);
    let body = bincode::serde::encode_to_vec(
        Echo {
            text: "binary".into(),
        },
        bincode::config::standard(),
    )
    .unwrap();
    let reply = raw_call(&tool, a.addr(), frames(&[&header, &body]))
        .await
        .expect("reply");
    assert_eq!(reply.format, HeaderFormat::Bincode);
    assert_eq!(reply.header.request_id, 45);
    assert!(reply.header.error.is_none(), "{:?}", reply.header.error);
    let (echo, _): (EchoReply, usize) =
        bincode::serde::decode_from_slice(&reply.body, bincode::config::standard()).unwrap();
    assert_eq!(echo.text, "binary");
    assert_eq!(echo.content_type.as_deref(), Some("application/bincode"));

    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_body_is_a_bad_request() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let tool = raw_endpoint(&ca);
    let json = |id| json_header(FIXTURE, ECHO, "application/json", id, &[]);
    let json_bincode = |id| json_header(FIXTURE, ECHO, "application/bincode", id, &[]);

    let cases: Vec<(&str, Vec<u8>, Vec<u8>, HeaderFormat)> = vec![
        (
            "JSON body that is not JSON",
            json(1),
            b"not json".to_vec(),
            HeaderFormat::Json,
        ),
        (
            "JSON body of the wrong shape",
            json(2),
            br#"{"txt":1}"#.to_vec(),
            HeaderFormat::Json,
        ),
        ("empty JSON body", json(3), Vec::new(), HeaderFormat::Json),
        (
            "bincode body that is garbage",
            json_bincode(4),
            vec![0xff; 3],
            HeaderFormat::Json,
        ),
        (
            "bincode body with trailing bytes",
            json_bincode(5),
            {
                let mut b = bincode::serde::encode_to_vec(
                    Echo { text: "x".into() },
                    bincode::config::standard(),
                )
                .unwrap();
                b.extend_from_slice(&[0, 0]);
                b
            },
            HeaderFormat::Json,
        ),
        (
            "binary header, garbage body",
            bincode_header(FIXTURE, ECHO, "application/bincode", 6),
            vec![0xff; 9],
            HeaderFormat::Bincode,
        ),
        (
            "unsupported content type",
            json_header(FIXTURE, ECHO, "text/plain", 7, &[]),
            b"hello".to_vec(),
            HeaderFormat::Json,
        ),
    ];
    for (id, (case, header, body, format)) in (1u64..).zip(cases) {
        let reply = within(case, raw_call(&tool, a.addr(), frames(&[&header, &body])))
            .await
            .unwrap_or_else(|e| panic!("{case}: expected a reply, got {e}"));
        assert_refused(&reply, Code::BadRequest, format, case);
        assert_eq!(reply.header.request_id, id, "{case}: request id echoed");
    }
    // The JSON form of a refusal is exactly what a tool expects.
    let reply = raw_call(&tool, a.addr(), frames(&[&json(9), b"{"]))
        .await
        .unwrap();
    let head: serde_json::Value = serde_json::from_slice(&reply.header_bytes).unwrap();
    assert_eq!(head["request_id"], 9);
    assert_eq!(head["error"]["code"], 400);
    assert_eq!(head["error"]["origin"], "server");
    assert!(head["error"]["detail"].as_str().unwrap().contains("json"));

    healthy_json_call(&tool, a.addr(), 10).await;
    a.shutdown().await;
}

/// What a stream of bad bytes must end in.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An error reply with this code, in this header format.
    Refused(Code, HeaderFormat),
    /// The server resets the stream: there is no caller to answer.
    Reset,
}

/// Sends every case on `tool`'s one connection and checks that the node answers a normal call on
/// the same connection after each of them.
async fn send_bad_streams(tool: &Endpoint, addr: SocketAddr, cases: Vec<(&str, Bytes, Expect)>) {
    let mut last_index = None;
    let mut check_index = |index: u64, case: &str| {
        if let Some(last) = last_index {
            assert!(
                index > last,
                "{case}: stream {index} after {last}: the connection was replaced"
            );
        }
        last_index = Some(index);
    };
    for (id, (case, bytes, expect)) in (100u64..).zip(cases) {
        let outcome = within(case, raw_call(tool, addr, bytes)).await;
        match (expect, outcome) {
            (Expect::Refused(code, format), Ok(reply)) => {
                assert_refused(&reply, code, format, case);
                check_index(reply.stream_index, case);
            }
            (Expect::Reset, Err(e)) => {
                assert!(
                    e.contains("reset"),
                    "{case}: expected a stream reset, got {e}"
                )
            }
            (expect, outcome) => panic!("{case}: expected {expect:?}, got {outcome:?}"),
        }
        // Same connection, next stream: still served.
        let index = healthy_json_call(tool, addr, id).await;
        check_index(index, case);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_end_only_their_stream() {
    let ca = new_ca();
    let a = node_builder(&ca, "a")
        .max_frame(1024)
        .start()
        .await
        .unwrap();
    let _fixture = start_fixture(&a, FIXTURE, 1).await;
    let tool = raw_endpoint(&ca);
    let json = |id| json_header(FIXTURE, ECHO, "application/json", id, &[]);

    let mut gib_prefix = vec![0x40, 0, 0, 0];
    gib_prefix.extend_from_slice(b"{\"service\":");
    let big_body = format!(r#"{{"text":"{}"}}"#, "x".repeat(2048));
    let cases = vec![
        (
            "header announcing 1 GiB",
            Bytes::from(gib_prefix),
            Expect::Refused(Code::TooLarge, HeaderFormat::Bincode),
        ),
        (
            "header frame of 2 KiB",
            frames(&[&serde_json::to_vec(&serde_json::json!({
                "service": FIXTURE, "endpoint": ECHO, "content_type": "application/json",
                "timeout_ms": 1000, "request_id": 1, "metadata": {"pad": "y".repeat(2048)},
            }))
            .unwrap()]),
            Expect::Refused(Code::TooLarge, HeaderFormat::Bincode),
        ),
        (
            "body frame of 2 KiB",
            frames(&[&json(2), big_body.as_bytes()]),
            Expect::Refused(Code::TooLarge, HeaderFormat::Json),
        ),
        (
            "body announcing 4 GiB - 1",
            {
                let mut b = frames(&[&json(3)]).to_vec();
                b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
                Bytes::from(b)
            },
            Expect::Refused(Code::TooLarge, HeaderFormat::Json),
        ),
    ];
    send_bad_streams(&tool, a.addr(), cases).await;

    // A new connection is served too.
    let fresh = raw_endpoint(&ca);
    assert_eq!(
        healthy_json_call(&fresh, a.addr(), 7).await,
        0,
        "first stream of a new connection"
    );
    let b = start_node(&ca, "b").await;
    let reply = b
        .client()
        .call_at(a.addr(), FIXTURE, Echo { text: "ok".into() })
        .await
        .unwrap();
    assert_eq!(reply.text, "ok");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_limits_give_too_large_on_both_sides() {
    let ca = new_ca();
    // `small` accepts and sends frames of at most 1 KiB; `big` has the default limit.
    let small = node_builder(&ca, "small")
        .max_frame(1024)
        .start()
        .await
        .unwrap();
    let big = start_node(&ca, "big").await;
    let _fs = start_fixture(&small, FIXTURE, 1).await;
    let _fb = start_fixture(&big, FIXTURE, 1).await;
    let echo = |n: usize| Echo {
        text: "x".repeat(n),
    };

    // A request over the server's limit: the server refuses it.
    let err = expect_err(
        big.client()
            .call_at(small.addr(), FIXTURE, echo(2048))
            .await,
        "2 KiB request to a 1 KiB node",
    );
    assert_eq!(
        (err.code(), err.origin()),
        (Code::TooLarge, Origin::Server),
        "{err}"
    );
    // A reply over the server's limit: the server refuses to send it.
    let err = expect_err(
        big.client()
            .call_at(small.addr(), FIXTURE, Blob { len: 2048 })
            .await,
        "2 KiB reply from a 1 KiB node",
    );
    assert_eq!(
        (err.code(), err.origin()),
        (Code::TooLarge, Origin::Server),
        "{err}"
    );
    // A request over the client's own limit is not sent.
    let err = expect_err(
        small
            .client()
            .call_at(big.addr(), FIXTURE, echo(2048))
            .await,
        "2 KiB request from a 1 KiB node",
    );
    assert_eq!(
        (err.code(), err.origin()),
        (Code::TooLarge, Origin::Client),
        "{err}"
    );
    // A reply over the client's own limit is not read.
    let err = expect_err(
        small
            .client()
            .call_at(big.addr(), FIXTURE, Blob { len: 2048 })
            .await,
        "2 KiB reply to a 1 KiB node",
    );
    assert_eq!(
        (err.code(), err.origin()),
        (Code::TooLarge, Origin::Client),
        "{err}"
    );

    // Both still serve normal calls both ways.
    let reply = big
        .client()
        .call_at(small.addr(), FIXTURE, echo(10))
        .await
        .unwrap();
    assert_eq!(reply.text.len(), 10);
    let reply = small
        .client()
        .call_at(big.addr(), FIXTURE, echo(10))
        .await
        .unwrap();
    assert_eq!(reply.text.len(), 10);

    small.shutdown().await;
    big.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_end_only_their_stream() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let tool = raw_endpoint(&ca);
    let json = |id| json_header(FIXTURE, ECHO, "application/json", id, &[]);

    // Deterministic noise.
    let mut x: u32 = 0x1234_5678;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let mut noise_small_prefix = vec![0, 0, 0x08, 0];
    noise_small_prefix.extend_from_slice(&noise[..2048]);

    let cases = vec![
        (
            "an HTTP request",
            Bytes::from_static(b"GET / HTTP/1.1\r\nHost: colony\r\n\r\n"),
            Expect::Refused(Code::TooLarge, HeaderFormat::Bincode),
        ),
        (
            "an unknown header format",
            frames(&[&[0xde, 0xad, 0xbe, 0xef]]),
            Expect::Refused(Code::BadRequest, HeaderFormat::Bincode),
        ),
        (
            "a binary header of garbage",
            frames(&[&[0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], b""]),
            Expect::Refused(Code::BadRequest, HeaderFormat::Bincode),
        ),
        (
            "a JSON header of garbage",
            frames(&[b"{ this is not json", b"{}"]),
            Expect::Refused(Code::BadRequest, HeaderFormat::Json),
        ),
        (
            "a JSON header missing fields",
            frames(&[br#"{"service":"fixture"}"#, b"{}"]),
            Expect::Refused(Code::BadRequest, HeaderFormat::Json),
        ),
        (
            "an empty header frame",
            frames(&[b"", b""]),
            Expect::Refused(Code::BadRequest, HeaderFormat::Bincode),
        ),
        (
            "a header frame cut short",
            Bytes::from_static(&[0, 0, 0, 100, b'{', b'"']),
            Expect::Refused(Code::BadRequest, HeaderFormat::Bincode),
        ),
        (
            "a length prefix cut short",
            Bytes::from_static(&[0, 0]),
            Expect::Refused(Code::BadRequest, HeaderFormat::Bincode),
        ),
        (
            "a header and no body",
            frames(&[&json(1)]),
            Expect::Refused(Code::BadRequest, HeaderFormat::Json),
        ),
        (
            "a body frame cut short",
            {
                let mut b = frames(&[&json(2)]).to_vec();
                b.extend_from_slice(&[0, 0, 0, 50, b'{']);
                Bytes::from(b)
            },
            Expect::Refused(Code::BadRequest, HeaderFormat::Json),
        ),
        (
            "noise behind a plausible length",
            Bytes::from(noise_small_prefix),
            Expect::Refused(Code::BadRequest, HeaderFormat::Bincode),
        ),
        (
            // Its first four bytes, 87 15 48 81, announce a header frame of about 2.27 GB.
            "raw noise",
            Bytes::from(noise),
            Expect::Refused(Code::TooLarge, HeaderFormat::Bincode),
        ),
        ("nothing at all", Bytes::new(), Expect::Reset),
    ];
    send_bad_streams(&tool, a.addr(), cases).await;

    // A new connection is served too.
    let fresh = raw_endpoint(&ca);
    assert_eq!(healthy_json_call(&fresh, a.addr(), 51).await, 0);
    a.shutdown().await;
}
