//! colony's side: the echo service, its server, and the callers that drive it.
//!
//! The request is `{ id: u64, body: String }` and the reply echoes it, the same shape as the
//! protobuf messages of the tonic side. Each instance of the service is an actor that answers
//! one message at a time; the server runs several instances (see `--instances`). A server can
//! join a cluster and can be told to fail every call (the resilience scenario).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use colony::prelude::*;
use colony::{ClusterCa, NodeBuilder, Strategy};
use serde::{Deserialize, Serialize};

use crate::certs::BoxError;
use crate::load::Caller;

/// The service name callers address.
pub(crate) const SERVICE: &str = "echo";

/// An echo request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Echo {
    /// Caller-chosen id, returned as is.
    pub(crate) id: u64,
    /// The payload.
    pub(crate) body: String,
}

/// The echo reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EchoReply {
    /// The request's id.
    pub(crate) id: u64,
    /// The request's payload.
    pub(crate) body: String,
}

impl Message for Echo {
    type Reply = EchoReply;
    const ENDPOINT: &'static str = "Echo.Call";
}

/// The service: no state, hands the payload back (or, when `fail`, refuses every call).
pub(crate) struct EchoService {
    fail: bool,
}

/// What a failing instance answers.
pub(crate) const FAILURE: &str = "bench: this instance fails every call";

impl Handler<Echo> for EchoService {
    async fn handle(&mut self, req: Echo, _ctx: &Context) -> Result<EchoReply, Error> {
        if self.fail {
            return Err(Error::unavailable(FAILURE));
        }
        Ok(EchoReply {
            id: req.id,
            body: req.body,
        })
    }
}

/// A server node to start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    /// Its name, distinct within a cluster (instance ids are `echo@<name>`).
    pub(crate) name: &'a str,
    /// Where it gets its cluster CA.
    pub(crate) trust: Trust<'a>,
    /// Instances (actors) of the echo service.
    pub(crate) instances: usize,
    /// A node to join through; `None` starts a cluster of its own.
    pub(crate) seed: Option<SocketAddr>,
    /// Whether every call fails with `Unavailable`.
    pub(crate) fail: bool,
    /// The node's `lock_max_ttl` (the locks scenario); `None`: colony's default.
    pub(crate) lock_max_ttl: Option<Duration>,
}

/// Starts a node on a free loopback port serving [`SERVICE`] with `instances` instances.
pub(crate) async fn start_server(
    name: &str,
    trust: Trust<'_>,
    instances: usize,
) -> Result<Node, BoxError> {
    start_member(Member {
        name,
        trust,
        instances,
        seed: None,
        fail: false,
        lock_max_ttl: None,
    })
    .await
}

/// Starts the node `member` describes, serving [`SERVICE`].
pub(crate) async fn start_member(member: Member<'_>) -> Result<Node, BoxError> {
    let builder = Node::builder()
        .name(member.name)
        .listen("127.0.0.1:0")
        .seeds(member.seed.map(|s| s.to_string()));
    let builder = match member.lock_max_ttl {
        Some(ttl) => crate::lock_side::with_max_ttl(builder, ttl),
        None => builder,
    };
    let node = match member.trust {
        Trust::Ca(ca) => builder.ca(ca.clone()),
        Trust::Dir(dir) => builder.ca_dir(dir),
    }
    .start()
    .await?;
    let fail = member.fail;
    node.service(SERVICE)
        .instances(member.instances.max(1))
        .handler::<Echo>()
        .spawn(move || EchoService { fail })
        .await?;
    Ok(node)
}

/// Where a node gets its cluster CA.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trust<'a> {
    /// A CA held in memory.
    Ca(&'a Arc<ClusterCa>),
    /// The `ca.pem` in a directory, written by the parent process.
    Dir(&'a Path),
}

/// Starts a node that only calls (it still binds a port, as every node does).
pub(crate) async fn start_client(name: &str, ca: &Arc<ClusterCa>) -> Result<Node, BoxError> {
    Ok(Node::builder()
        .name(name)
        .listen("127.0.0.1:0")
        .ca(ca.clone())
        .start()
        .await?)
}

/// How long a joining client waits to see the instances it will call.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts a client-only node that joins the cluster through `seed` and waits until it sees
/// `instances` instances of [`SERVICE`].
pub(crate) async fn join_client(
    name: &str,
    ca: &Arc<ClusterCa>,
    seed: SocketAddr,
    instances: usize,
) -> Result<Node, BoxError> {
    join_client_with(name, ca, seed, instances, |builder| builder).await
}

/// [`join_client`], with `configure` applied to the node's builder (e.g. the locks scenario's
/// `lock_max_ttl`, which every node of a cluster must share).
pub(crate) async fn join_client_with(
    name: &str,
    ca: &Arc<ClusterCa>,
    seed: SocketAddr,
    instances: usize,
    configure: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> Result<Node, BoxError> {
    let builder = Node::builder()
        .name(name)
        .listen("127.0.0.1:0")
        .ca(ca.clone())
        .seeds([seed.to_string()])
        .client_only();
    let node = configure(builder).start().await?;
    let seen = node
        .registry()
        .wait_until(JOIN_TIMEOUT, |r| r.instances(SERVICE).len() >= instances)
        .await;
    if !seen {
        let found = node.registry().instances(SERVICE).len();
        node.shutdown().await;
        return Err(format!(
            "{name} saw {found} of {instances} instances of {SERVICE} within {JOIN_TIMEOUT:?}"
        )
        .into());
    }
    Ok(node)
}

/// Further attempts of a resilient call (the runtime's default, stated).
pub(crate) const RETRIES: u32 = 2;

/// Deadline of a resilient call: bounds a run even if every attempt hangs.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The short name of a strategy, for labels.
pub(crate) fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Random => "random",
        Strategy::RoundRobin => "round-robin",
        Strategy::LeastOutstanding => "least-outstanding",
        Strategy::PowerOfTwoChoices => "p2c",
        Strategy::LocalFirst => "local-first",
        _ => "other",
    }
}

/// One load task's calls: to the node at `addr`, or by name when `addr` is `None` (in-process
/// when the client's own node serves [`SERVICE`], otherwise through the selector).
pub(crate) struct ColonyCaller {
    client: Client,
    addr: Option<SocketAddr>,
    strategy: Option<Strategy>,
    resilient: bool,
    body: String,
    next_id: u64,
}

impl ColonyCaller {
    /// Calls [`SERVICE`] with a `body` payload, remotely at `addr` or by name.
    pub(crate) fn new(client: Client, addr: Option<SocketAddr>, body: String) -> Self {
        Self {
            client,
            addr,
            strategy: None,
            resilient: false,
            body,
            next_id: 0,
        }
    }

    /// Chooses instances with `strategy` instead of the node's default (calls by name).
    pub(crate) fn strategy(mut self, strategy: Option<Strategy>) -> Self {
        self.strategy = strategy;
        self
    }

    /// Makes every call idempotent, with [`RETRIES`] retries and a [`CALL_TIMEOUT`] deadline.
    pub(crate) fn resilient(mut self) -> Self {
        self.resilient = true;
        self
    }
}

impl Caller for ColonyCaller {
    async fn call(&mut self) -> Result<(), String> {
        self.next_id += 1;
        let id = self.next_id;
        let req = Echo {
            id,
            body: self.body.clone(),
        };
        let mut call = self.client.request(SERVICE, req);
        if let Some(addr) = self.addr {
            call = call.at(addr);
        }
        if let Some(strategy) = self.strategy {
            call = call.strategy(strategy);
        }
        if self.resilient {
            call = call.idempotent().retries(RETRIES).timeout(CALL_TIMEOUT);
        }
        let reply = call.send().await.map_err(|e| e.to_string())?;
        check(id, self.body.len(), reply.id, reply.body.len())
    }
}

/// Checks that a reply echoes its request (shared by every side).
pub(crate) fn check(id: u64, len: usize, got_id: u64, got_len: usize) -> Result<(), String> {
    if got_id == id && got_len == len {
        Ok(())
    } else {
        Err(format!(
            "wrong echo: id {got_id} len {got_len}, expected id {id} len {len}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_accepts_only_the_echo() {
        assert!(check(7, 100, 7, 100).is_ok());
        assert!(check(7, 100, 8, 100).is_err());
        assert!(check(7, 100, 7, 99).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_and_local_calls_echo() {
        let ca = Arc::new(ClusterCa::generate().unwrap());
        let server = start_server("s", Trust::Ca(&ca), 2).await.unwrap();
        let client = start_client("c", &ca).await.unwrap();
        let mut remote = ColonyCaller::new(client.client(), Some(server.addr()), "x".repeat(100));
        remote.call().await.unwrap();
        remote.call().await.unwrap();
        let mut local = ColonyCaller::new(server.client(), None, "y".repeat(10));
        local.call().await.unwrap();
        client.shutdown().await;
        server.shutdown().await;
    }

    /// Two servers in one cluster, one failing every call: idempotent calls by name retry on
    /// the other, so none fails, and the caller's selector counts the failing one's failures.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resilient_calls_by_name_avoid_a_failing_instance() {
        let ca = Arc::new(ClusterCa::generate().unwrap());
        let member = |name, seed, fail| Member {
            name,
            trust: Trust::Ca(&ca),
            instances: 1,
            seed,
            fail,
            lock_max_ttl: None,
        };
        let good = start_member(member("good", None, false)).await.unwrap();
        let bad = start_member(member("bad", Some(good.addr()), true))
            .await
            .unwrap();
        let client = join_client("caller", &ca, good.addr(), 2).await.unwrap();

        // Called alone, the failing server refuses with Unavailable.
        let refused = client
            .client()
            .request(
                SERVICE,
                Echo {
                    id: 1,
                    body: "x".into(),
                },
            )
            .at(bad.addr())
            .send()
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(refused.detail(), FAILURE);

        for strategy in [Strategy::RoundRobin, Strategy::PowerOfTwoChoices] {
            let mut caller = ColonyCaller::new(client.client(), None, "x".into())
                .strategy(Some(strategy))
                .resilient();
            for _ in 0..20 {
                caller.call().await.unwrap();
            }
        }
        let report = client.client().instance_report(SERVICE).await;
        let failures = |node: &str| {
            report
                .iter()
                .find(|i| i.node == node)
                .map(|i| (i.calls, i.failures))
        };
        // Round-robin sends every other call to the failing one until 5 failures in a row eject
        // it: some attempts failed there (each retried on the other), and none succeeded.
        let (bad_calls, bad_failures) = failures("bad").unwrap();
        assert!(bad_failures >= 1, "{report:?}");
        assert_eq!(bad_calls, bad_failures, "{report:?}");
        assert_eq!(failures("good").unwrap().1, 0, "{report:?}");
        client.shutdown().await;
        bad.shutdown().await;
        good.shutdown().await;
    }
}
