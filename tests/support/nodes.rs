//! Starting nodes on an in-memory CA, and waiting without hanging.

use std::sync::Arc;
use std::time::Duration;

use colony::{ClusterCa, Error, Identity, Node, NodeBuilder};

use crate::*;

/// Logs to the test output when `RUST_LOG` is set; harmless to call more than once.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A fresh in-memory cluster CA.
pub fn new_ca() -> Arc<ClusterCa> {
    Arc::new(ClusterCa::generate().expect("CA generation"))
}

/// A node builder trusting `ca`, listening on `127.0.0.1:0`.
pub fn node_builder(ca: &Arc<ClusterCa>, name: &str) -> NodeBuilder {
    init_tracing();
    Node::builder()
        .name(name)
        .listen("127.0.0.1:0")
        .ca(ca.clone())
}

/// Starts a node trusting `ca` on `127.0.0.1:0`.
pub async fn start_node(ca: &Arc<ClusterCa>, name: &str) -> Node {
    node_builder(ca, name).start().await.expect("node starts")
}

/// Starts a node with the fixture service as [`FIXTURE`] (`instances` instances).
pub async fn start_node_with_fixture(
    ca: &Arc<ClusterCa>,
    name: &str,
    instances: usize,
) -> (Node, FixtureService) {
    let node = start_node(ca, name).await;
    let fixture = start_fixture(&node, FIXTURE, instances).await;
    (node, fixture)
}

// ---------------------------------------------------------------------------------------------
// Bounded waiting
// ---------------------------------------------------------------------------------------------

/// Polls `cond` every few milliseconds until it holds; panics naming `what` after
/// [`HANG_LIMIT`].
pub async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let polled = tokio::time::timeout(HANG_LIMIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if polled.is_err() {
        panic!("timed out after {HANG_LIMIT:?} waiting for {what}");
    }
}

/// Awaits `fut`, panicking naming `what` if it takes longer than [`HANG_LIMIT`] (a hang).
pub async fn within<F: std::future::IntoFuture>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(HANG_LIMIT, fut.into_future()).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {HANG_LIMIT:?}"),
    }
}

/// The error of a call that must fail, with a readable panic if it succeeded.
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) -> Error {
    match result {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

/// An identity that trusts `ca` (so it accepts the cluster's servers) but presents a self-signed
/// certificate no cluster CA issued.
pub fn impostor_identity(ca: &ClusterCa) -> Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec![colony_quic::SERVER_NAME.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "impostor");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).unwrap();
    Identity::from_pem(ca.cert_pem(), &cert.pem(), &key.serialize_pem()).unwrap()
}

/// Waits until `node`'s registry satisfies `ready`; panics naming `what` after [`HANG_LIMIT`].
pub async fn converge(node: &Node, what: &str, ready: impl FnMut(&colony::Registry) -> bool) {
    assert!(
        node.registry().wait_until(HANG_LIMIT, ready).await,
        "{} never saw {what}",
        node.name()
    );
}
