//! Errors: every code a handler returns reaches a remote caller intact (code, detail, origin),
//! identical to what a local caller gets; unknown services and endpoints are `NotFound` decided by
//! the serving runtime.

use colony::{Code, Error, Message, Origin};
use colony_tests::*;

const CODES: [Code; 10] = [
    Code::BadRequest,
    Code::Unauthorized,
    Code::Forbidden,
    Code::NotFound,
    Code::Timeout,
    Code::Conflict,
    Code::TooLarge,
    Code::Internal,
    Code::Unavailable,
    Code::Other(418),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_handler_error_code_crosses_the_wire_intact() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 2).await;
    let b = start_node(&ca, "b").await;

    for code in CODES {
        let number = u16::from(code);
        let detail = format!("refused with {number}: ünïcode ✓ \"quoted\"");
        let fail = || Fail {
            code: number,
            detail: detail.clone(),
        };
        let expected = Error::new(code, detail.clone());

        let local = expect_err(a.client().call(FIXTURE, fail()).await, "local");
        let bin = expect_err(
            b.client().call_at(a.addr(), FIXTURE, fail()).await,
            "bincode",
        );
        let json = expect_err(
            b.client()
                .request(FIXTURE, fail())
                .at(a.addr())
                .json()
                .await,
            "JSON",
        );
        for (path, err) in [("local", &local), ("bincode", &bin), ("json", &json)] {
            assert_eq!(err.code(), code, "{path} code for {number}");
            assert_eq!(err.detail(), detail, "{path} detail for {number}");
            assert_eq!(err.origin(), Origin::Handler, "{path} origin for {number}");
            assert_eq!(*err, expected, "{path} error for {number}");
        }
        assert_eq!(
            local, bin,
            "local and remote errors are identical for {number}"
        );
        assert_eq!(local, json);
    }

    // An unknown code number survives as itself.
    let err = expect_err(
        b.client()
            .call_at(
                a.addr(),
                FIXTURE,
                Fail {
                    code: 599,
                    detail: String::new(),
                },
            )
            .await,
        "code 599",
    );
    assert_eq!(err.code(), Code::Other(599));
    assert_eq!(u16::from(err.code()), 599);
    assert_eq!(err.detail(), "");

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_and_endpoint_are_not_found_from_the_server() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let b = start_node(&ca, "b").await;
    let echo = || Echo {
        text: "anyone?".into(),
    };

    // Unknown service. The serving runtime decides it for a call addressed to a node, whether
    // the node is this one (in-process) or another (over QUIC): the same error either way.
    let local = expect_err(
        a.client().call_at(a.addr(), "nosuch", echo()).await,
        "local",
    );
    let bin = expect_err(
        b.client().call_at(a.addr(), "nosuch", echo()).await,
        "bincode",
    );
    let json = expect_err(
        b.client()
            .request("nosuch", echo())
            .at(a.addr())
            .json()
            .await,
        "JSON",
    );
    for (path, err) in [("local", &local), ("bincode", &bin), ("json", &json)] {
        assert_eq!(err.code(), Code::NotFound, "{path}: {err}");
        assert_eq!(err.origin(), Origin::Server, "{path}: {err}");
        assert!(err.detail().contains("nosuch"), "{path}: {err}");
    }
    assert_eq!(local, bin, "a local and a remote caller get the same error");
    assert_eq!(local, json);
    // By name alone, the caller resolves the service (here, then in the cluster) and finds none.
    let by_name = expect_err(a.client().call("nosuch", echo()).await, "by name");
    assert_eq!(by_name.code(), Code::NotFound, "{by_name}");
    assert!(by_name.detail().contains("nosuch"), "{by_name}");

    // Known service, unknown endpoint.
    let local = expect_err(a.client().call(FIXTURE, Unanswered {}).await, "local");
    let bin = expect_err(
        b.client().call_at(a.addr(), FIXTURE, Unanswered {}).await,
        "bincode",
    );
    let json = expect_err(
        b.client()
            .request(FIXTURE, Unanswered {})
            .at(a.addr())
            .json()
            .await,
        "JSON",
    );
    for (path, err) in [("local", &local), ("bincode", &bin), ("json", &json)] {
        assert_eq!(err.code(), Code::NotFound, "{path}: {err}");
        assert_eq!(err.origin(), Origin::Server, "{path}: {err}");
        assert!(err.detail().contains(Unanswered::ENDPOINT), "{path}: {err}");
    }
    assert_eq!(local, bin);
    assert_eq!(local, json);

    // The service still answers what it knows.
    let reply = b.client().call_at(a.addr(), FIXTURE, echo()).await.unwrap();
    assert_eq!(reply.text, "anyone?");

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_detail_is_shortened_not_turned_into_another_error() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let b = start_node(&ca, "b").await;
    // Far over the 64 KiB reply-header limit, with multi-byte characters at any cut.
    let detail = "é".repeat(100_000);
    let client = b.client();
    for json in [false, true] {
        let mut call = client
            .request(
                FIXTURE,
                Fail {
                    code: 409,
                    detail: detail.clone(),
                },
            )
            .at(a.addr());
        if json {
            call = call.json();
        }
        let err = expect_err(call.await, "huge detail");
        assert_eq!(err.code(), Code::Conflict, "json: {json}");
        assert_eq!(err.origin(), Origin::Handler);
        assert!(err.detail().starts_with("éé"));
        assert!(
            err.detail().len() < 64 * 1024,
            "{} bytes",
            err.detail().len()
        );
        assert!(err.detail().ends_with("(truncated)"));
    }
    b.shutdown().await;
    a.shutdown().await;
}
