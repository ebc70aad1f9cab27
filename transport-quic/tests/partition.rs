//! Fault injection: [`Endpoint::cut_off`] partitions two endpoints at the UDP level, so calls
//! fail by timeouts as in a real partition, and [`Endpoint::restore`] heals it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use colony_quic::{frame, ClusterCa, Endpoint, OpenError, ReadError, TransportConfig, WriteError};

/// Only there to turn a hang into a failure: every outcome awaited here comes much sooner.
const HANG_LIMIT: Duration = Duration::from_secs(20);

/// Short timers, so a partition is noticed in half a second.
fn config() -> TransportConfig {
    TransportConfig {
        open_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_millis(500),
        keep_alive: Duration::from_millis(100),
        ..TransportConfig::default()
    }
}

fn bind(ca: &ClusterCa, name: &str) -> Endpoint {
    let identity = ca.issue(name).expect("issue identity");
    Endpoint::bind("127.0.0.1:0".parse().unwrap(), &identity, config()).expect("bind")
}

/// Answers each frame on each bi-directional stream with the same frame.
fn serve_echo(server: Endpoint) {
    tokio::spawn(async move {
        let max = server.config().max_frame;
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(body) = frame::read_frame(&mut recv, max).await else {
                            return;
                        };
                        let mut buf = BytesMut::new();
                        frame::encode_frame(&mut buf, &body, max).expect("encode");
                        let _ = frame::write_frames(&mut send, buf.freeze()).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
}

/// How an exchange failed.
#[derive(Debug)]
enum Failure {
    Open(OpenError),
    Write(WriteError),
    Read(ReadError),
}

impl Failure {
    /// True for the failures of a silent peer: a dial or stream that timed out, or a
    /// connection lost to its idle timeout. Not a refusal, a reset or a close.
    fn is_timeout(&self) -> bool {
        use quinn::ConnectionError::TimedOut;
        match self {
            Failure::Open(OpenError::Timeout { .. }) => true,
            Failure::Open(OpenError::Connection { source, .. }) => *source == TimedOut,
            Failure::Write(WriteError::Stream(quinn::WriteError::ConnectionLost(e))) => {
                *e == TimedOut
            }
            Failure::Read(ReadError::Stream(quinn::ReadError::ConnectionLost(e))) => *e == TimedOut,
            _ => false,
        }
    }
}

/// Sends `body` to `peer` on a new stream and reads the echo; bounded only by `HANG_LIMIT`.
async fn exchange(client: &Endpoint, peer: SocketAddr, body: &[u8]) -> Result<Bytes, Failure> {
    let max = client.config().max_frame;
    let attempt = async {
        let (mut send, mut recv) = client.open(peer).await.map_err(Failure::Open)?;
        let mut buf = BytesMut::new();
        frame::encode_frame(&mut buf, body, max).map_err(Failure::Write)?;
        frame::write_frames(&mut send, buf.freeze())
            .await
            .map_err(Failure::Write)?;
        let _ = send.finish();
        frame::read_frame(&mut recv, max)
            .await
            .map_err(Failure::Read)
    };
    tokio::time::timeout(HANG_LIMIT, attempt)
        .await
        .expect("the exchange ends, one way or the other")
}

async fn assert_round_trip(client: &Endpoint, peer: SocketAddr, body: &[u8]) {
    let echoed = exchange(client, peer, body)
        .await
        .unwrap_or_else(|e| panic!("exchange {:?} fails: {e:?}", String::from_utf8_lossy(body)));
    assert_eq!(&echoed[..], body);
}

async fn assert_partitioned(client: &Endpoint, peer: SocketAddr, body: &[u8]) {
    match exchange(client, peer, body).await {
        Ok(echoed) => panic!("a cut peer answered {echoed:?}"),
        Err(failure) => assert!(
            failure.is_timeout(),
            "a partition fails by a timeout, not {failure:?}"
        ),
    }
}

#[tokio::test]
async fn cutting_off_the_peer_on_the_dialling_side_partitions_until_restored() {
    let ca = ClusterCa::generate().expect("CA");
    let (server, client) = (bind(&ca, "server"), bind(&ca, "client"));
    serve_echo(server.clone());
    let peer = server.local_addr();

    assert_round_trip(&client, peer, b"before").await;

    // Cutting someone else changes nothing here.
    client.cut_off(["127.0.0.1:9".parse().unwrap()]);
    assert_round_trip(&client, peer, b"unrelated cut").await;

    client.cut_off([peer]);
    let mut cut = client.cut_peers();
    cut.sort();
    assert_eq!(cut, vec!["127.0.0.1:9".parse().unwrap(), peer]);
    // The pooled connection still looks alive: the stream opens, and the reply never comes.
    assert_partitioned(&client, peer, b"during, pooled").await;
    // Now a fresh dial: the handshake gets no answer.
    assert_partitioned(&client, peer, b"during, dialled").await;

    client.restore();
    assert!(client.cut_peers().is_empty());
    assert_round_trip(&client, peer, b"healed").await;
}

#[tokio::test]
async fn cutting_off_the_peer_on_the_serving_side_partitions_until_restored() {
    let ca = ClusterCa::generate().expect("CA");
    let (server, client) = (bind(&ca, "server"), bind(&ca, "client"));
    serve_echo(server.clone());
    let peer = server.local_addr();

    assert_round_trip(&client, peer, b"before").await;

    // Only the server drops: what the client sends is dropped on receipt, what the server
    // sends is swallowed before it leaves. The client sees the same silence.
    server.cut_off([client.local_addr()]);
    assert_eq!(server.cut_peers(), vec![client.local_addr()]);
    assert!(client.cut_peers().is_empty());
    assert_partitioned(&client, peer, b"during, pooled").await;
    assert_partitioned(&client, peer, b"during, dialled").await;

    server.restore();
    assert_round_trip(&client, peer, b"healed").await;
}
