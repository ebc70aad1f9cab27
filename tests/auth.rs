//! Mutual TLS: peers without a certificate from the cluster CA are refused, in both directions,
//! and the node goes on serving members.

use colony::{ClusterCa, Code, Origin, TransportConfig};
use colony_quic::{frame, Endpoint};
use colony_tests::*;

async fn assert_member_served(member: &colony::Node, addr: std::net::SocketAddr, text: &str) {
    let reply = within(
        "member call",
        member
            .client()
            .call_at(addr, FIXTURE, Echo { text: text.into() }),
    )
    .await
    .expect("a member is still served");
    assert_eq!(reply.text, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_both_ways() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let b = start_node(&ca, "b").await;
    let other_ca = new_ca();
    let (foreign, _foreign_fixture) = start_node_with_fixture(&other_ca, "foreign", 1).await;

    // Neither side trusts the other's CA. The foreign node calls a member: it refuses a's server
    // certificate itself, before a has judged anything.
    let err = expect_err(
        within(
            "foreign call",
            foreign.client().call_at(
                a.addr(),
                FIXTURE,
                Echo {
                    text: "let me in".into(),
                },
            ),
        )
        .await,
        "call from a foreign node",
    );
    assert_eq!(err.code(), Code::Unauthorized, "{err}");
    assert_eq!(err.origin(), Origin::Client, "{err}");

    // A member calls the foreign node: a refuses its server certificate (and the foreign node
    // would refuse a's). For a's checks alone, see the impostor tests below.
    let err = expect_err(
        within(
            "call to foreign node",
            a.client().call_at(
                foreign.addr(),
                FIXTURE,
                Echo {
                    text: "hello?".into(),
                },
            ),
        )
        .await,
        "call to a foreign node",
    );
    assert_eq!(err.code(), Code::Unauthorized, "{err}");
    assert_eq!(err.origin(), Origin::Client, "{err}");

    // Refused again on a second try (nothing was pooled), and members are still served.
    let err = expect_err(
        foreign
            .client()
            .call_at(
                a.addr(),
                FIXTURE,
                Echo {
                    text: "again".into(),
                },
            )
            .await,
        "second call from a foreign node",
    );
    assert_eq!(err.code(), Code::Unauthorized, "{err}");
    assert_member_served(&b, a.addr(), "member").await;

    foreign.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_endpoint_of_another_cluster_cannot_open_a_stream() {
    let ca = new_ca();
    let (a, _fixture) = start_node_with_fixture(&ca, "a", 1).await;
    let b = start_node(&ca, "b").await;
    let other_ca = ClusterCa::generate().unwrap();
    let raw = raw_endpoint(&other_ca);

    // The endpoint trusts only its own CA, so it is the one that refuses a's certificate.
    let err = within("foreign open", raw.open(a.addr()))
        .await
        .expect_err("a foreign endpoint opens no stream");
    assert!(err.is_auth_failure(), "expected a TLS refusal, got {err}");

    assert_member_served(&b, a.addr(), "member").await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_not_from_the_cluster_ca_gets_no_service() {
    let ca = new_ca();
    let (a, fixture) = start_node_with_fixture(&ca, "a", 1).await;
    fixture.stats.open_gate();
    let b = start_node(&ca, "b").await;

    // It trusts the node's certificate, so its side of the handshake may complete; the node
    // refuses its certificate, and no stream of it is ever served.
    let impostor = Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &impostor_identity(&ca),
        TransportConfig::default(),
    )
    .unwrap();
    let header = json_header(FIXTURE, "Fixture.Hold", "application/json", 1, &[]);
    let refused = within("impostor call", async {
        let (mut send, mut recv) = match impostor.open(a.addr()).await {
            Ok(streams) => streams,
            Err(e) => return (e.is_auth_failure(), e.to_string()),
        };
        let _ = frame::write_frames(&mut send, frames(&[&header, br#"{"tag":"impostor"}"#])).await;
        let _ = send.finish();
        match frame::read_frame(&mut recv, 1 << 20).await {
            Ok(head) => panic!("the impostor got a reply header: {head:?}"),
            Err(e) => (e.is_auth_failure(), e.to_string()),
        }
    })
    .await;
    assert!(refused.0, "expected a TLS refusal, got {}", refused.1);

    // Members are served, and only their calls ever ran.
    let held = b
        .client()
        .call_at(
            a.addr(),
            FIXTURE,
            Hold {
                tag: "member".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(held.tag, "member");
    assert_eq!(fixture.stats.started(), vec!["member".to_string()]);

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_trusting_the_cluster_ca_with_a_foreign_certificate_is_refused_both_ways() {
    let ca = new_ca();
    let (a, fixture) = start_node_with_fixture(&ca, "a", 1).await;
    fixture.stats.open_gate();
    let b = start_node(&ca, "b").await;
    // The impostor trusts the cluster CA, so it accepts a's certificate in either role: whatever
    // refuses it here is a's own check of the certificate it presents.
    let impostor = colony::Node::builder()
        .name("impostor")
        .identity(impostor_identity(&ca))
        .start()
        .await
        .unwrap();
    let impostor_fixture = start_fixture(&impostor, FIXTURE, 1).await;
    impostor_fixture.stats.open_gate();
    let hold = |tag: &str| Hold { tag: tag.into() };

    // The impostor calls a: a refuses its client certificate.
    for attempt in ["impostor", "impostor again"] {
        let err = expect_err(
            within(
                "impostor call",
                impostor.client().call_at(a.addr(), FIXTURE, hold(attempt)),
            )
            .await,
            "call from the impostor",
        );
        assert_eq!(err.code(), Code::Unauthorized, "{attempt}: {err}");
        assert_eq!(err.origin(), Origin::Client, "{attempt}: {err}");
    }

    // a calls the impostor: a refuses its server certificate.
    let err = expect_err(
        within(
            "call to the impostor",
            a.client().call_at(impostor.addr(), FIXTURE, hold("from a")),
        )
        .await,
        "call to the impostor",
    );
    assert_eq!(err.code(), Code::Unauthorized, "{err}");
    assert_eq!(err.origin(), Origin::Client, "{err}");
    assert!(
        impostor_fixture.stats.started().is_empty(),
        "a's call reached the impostor's handler"
    );

    // Members are still served, and only their calls ever ran on a.
    let held = within(
        "member call",
        b.client().call_at(a.addr(), FIXTURE, hold("member")),
    )
    .await
    .expect("a member is still served");
    assert_eq!(held.tag, "member");
    assert_eq!(fixture.stats.started(), vec!["member".to_string()]);

    impostor.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}
