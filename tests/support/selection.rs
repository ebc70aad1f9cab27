//! The `svc` service and cluster helpers of the selection, failover and layer tests.
//!
//! Every node runs on 127.0.0.1 port 0 in the test's process. Executions are counted on the
//! serving side (each node's [`Knobs`]) and replies name the node that answered, so every
//! assertion is on counts and values, never on time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use colony::{
    Client, ClusterCa, Context, Error, Handler, InstanceReport, Message, Node, NodeBuilder,
    ServiceRef, Strategy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::*;

/// The service every test calls.
pub const SVC: &str = "svc";

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// What a handler saw of its call, and who it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The node that ran the handler.
    pub node: String,
    /// Which instance (actor) of the service on that node ran it.
    pub instance: u64,
    /// Whether the call came over the network.
    pub remote: bool,
    /// `Context::remaining` when the handler started, in milliseconds.
    pub remaining_ms: u64,
    /// The call's metadata as the handler saw it.
    pub metadata: BTreeMap<String, String>,
}

/// Answers at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Who {}

impl Message for Who {
    type Reply = Answer;
    const ENDPOINT: &'static str = "Sel.Who";
}

/// Fails with `Error::unavailable` (origin Handler) while the node's `failing` knob is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flaky {}

impl Message for Flaky {
    type Reply = Answer;
    const ENDPOINT: &'static str = "Sel.Flaky";
}

/// Sleeps the node's `slow_ms`, or waits at its gate while `holding` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slow {}

impl Message for Slow {
    type Reply = Answer;
    const ENDPOINT: &'static str = "Sel.Slow";
}

/// Calls `Who` on `service` from inside the handler, with or without `.within(ctx)` and an own
/// timeout, and reports both sides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relay {
    /// The service the handler calls in turn.
    pub service: String,
    /// Whether the nested call passes the handler's context (`.within(ctx)`).
    pub within: bool,
    /// The nested call's own timeout, if any.
    pub timeout_ms: Option<u64>,
    /// A metadata entry set on the inner call itself.
    pub own_metadata: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// What the relaying handler and the handler it called saw.
pub struct Relayed {
    /// What the relaying handler saw of its own call.
    pub outer: Answer,
    /// What the inner service's handler saw.
    pub inner: Answer,
}

impl Message for Relay {
    type Reply = Relayed;
    const ENDPOINT: &'static str = "Sel.Relay";
}

// ---------------------------------------------------------------------------------------------
// The service, its per-node knobs and counters
// ---------------------------------------------------------------------------------------------

/// One node's switches and counters, shared by its service's instances and its serve layer.
pub struct Knobs {
    /// The node's name.
    pub node: String,
    /// Handler runs, every endpoint, failed ones included.
    pub executed: AtomicU64,
    /// `Flaky` answers `Unavailable` while set.
    pub failing: AtomicBool,
    /// `Slow` sleeps this long when not holding.
    pub slow_ms: AtomicU64,
    /// `Slow` waits at the gate while set.
    pub holding: AtomicBool,
    /// `Slow` calls that reached the gate.
    pub held: AtomicU64,
    /// Where held `Slow` calls wait.
    pub gate: Semaphore,
    /// The [`Refuse`] serve layer answers `Unavailable` while set.
    pub refusing: AtomicBool,
    /// Calls the [`Refuse`] layer refused.
    pub refused: AtomicU64,
    /// Instance numbers handed out by the factory.
    pub next_instance: AtomicU64,
    /// The node's client, for `Relay`.
    pub client: OnceLock<Client>,
}

impl Knobs {
    /// Fresh knobs for `node`: healthy, fast, not holding.
    pub fn new(node: &str) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_string(),
            executed: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            slow_ms: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            held: AtomicU64::new(0),
            gate: Semaphore::new(0),
            refusing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            next_instance: AtomicU64::new(0),
            client: OnceLock::new(),
        })
    }

    /// Handler executions on this node, all endpoints.
    pub fn executed(&self) -> u64 {
        self.executed.load(SeqCst)
    }
}

/// One instance of `svc`.
pub struct Svc {
    /// Its node's knobs.
    pub knobs: Arc<Knobs>,
    /// Which instance of the node's service it is.
    pub instance: u64,
}

impl Svc {
    /// The reply naming this node, counting the execution.
    pub fn answer(&self, ctx: &Context) -> Answer {
        self.knobs.executed.fetch_add(1, SeqCst);
        Answer {
            node: self.knobs.node.clone(),
            instance: self.instance,
            remote: ctx.peer().is_some(),
            remaining_ms: ctx.remaining().as_millis() as u64,
            metadata: ctx
                .metadata()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl Handler<Who> for Svc {
    async fn handle(&mut self, _req: Who, ctx: &Context) -> Result<Answer, Error> {
        Ok(self.answer(ctx))
    }
}

impl Handler<Flaky> for Svc {
    async fn handle(&mut self, _req: Flaky, ctx: &Context) -> Result<Answer, Error> {
        let answer = self.answer(ctx);
        if self.knobs.failing.load(SeqCst) {
            return Err(Error::unavailable(format!("{} is failing", answer.node)));
        }
        Ok(answer)
    }
}

impl Handler<Slow> for Svc {
    async fn handle(&mut self, _req: Slow, ctx: &Context) -> Result<Answer, Error> {
        let answer = self.answer(ctx);
        if self.knobs.holding.load(SeqCst) {
            self.knobs.held.fetch_add(1, SeqCst);
            // A closed gate is an open one.
            let _ = self.knobs.gate.acquire().await;
        } else {
            let ms = self.knobs.slow_ms.load(SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        Ok(answer)
    }
}

impl Handler<Relay> for Svc {
    async fn handle(&mut self, req: Relay, ctx: &Context) -> Result<Relayed, Error> {
        let outer = self.answer(ctx);
        let client = self
            .knobs
            .client
            .get()
            .expect("relay knows its client")
            .clone();
        let mut call = client.request(&req.service, Who {});
        if let Some(ms) = req.timeout_ms {
            call = call.timeout(Duration::from_millis(ms));
        }
        if let Some((k, v)) = &req.own_metadata {
            call = call.metadata(k, v.clone());
        }
        if req.within {
            call = call.within(ctx);
        }
        let inner = call.await?;
        Ok(Relayed { outer, inner })
    }
}

/// Runs [`SVC`] (or `name`) on `node` with `knobs`, at `version`, with `labels` as metadata.
pub async fn serve_as(
    node: &Node,
    name: &str,
    knobs: &Arc<Knobs>,
    version: &str,
    labels: &[(&str, &str)],
    instances: usize,
) -> ServiceRef {
    let mut builder = node
        .service(name)
        .version(version)
        .instances(instances)
        .handler::<Who>()
        .handler::<Flaky>()
        .handler::<Slow>()
        .handler::<Relay>();
    for (k, v) in labels {
        builder = builder.metadata(*k, *v);
    }
    let shared = knobs.clone();
    let _ = knobs.client.set(node.client());
    builder
        .spawn(move || Svc {
            knobs: shared.clone(),
            instance: shared.next_instance.fetch_add(1, SeqCst),
        })
        .await
        .expect("service starts")
}

/// Serves `svc` on `node`: version 1.0.0, no metadata, one instance.
pub async fn serve(node: &Node, knobs: &Arc<Knobs>) -> ServiceRef {
    serve_as(node, SVC, knobs, "1.0.0", &[], 1).await
}

// ---------------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------------

/// Starts node `name`, joined to `seed` if given, after `tweak` adjusts its builder.
pub async fn start(
    ca: &Arc<ClusterCa>,
    name: &str,
    seed: Option<SocketAddr>,
    tweak: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> Node {
    let mut builder = node_builder(ca, name);
    if let Some(seed) = seed {
        builder = builder.seeds([seed.to_string()]);
    }
    tweak(builder).start().await.expect("node starts")
}

/// A calling node without services plus three servers `s0`, `s1`, `s2` running [`SVC`], all
/// seeing all three instances. The caller is built by `tweak`.
pub struct Cluster {
    /// The node the test calls from.
    pub caller: Node,
    /// s0, s1, s2.
    pub servers: Vec<Node>,
    /// Each server's knobs, in the same order.
    pub knobs: Vec<Arc<Knobs>>,
    /// Each server's `svc`.
    pub services: Vec<ServiceRef>,
}

impl Cluster {
    /// Starts s0..s2 serving `svc` and the caller, all seeing all three instances.
    pub async fn start(
        ca: &Arc<ClusterCa>,
        tweak: impl FnOnce(NodeBuilder) -> NodeBuilder,
    ) -> Self {
        Self::start_with(ca, tweak, |_, b| b, 1).await
    }

    /// As [`start`](Self::start), with `server` adjusting each server's builder and `instances`
    /// actors per server.
    pub async fn start_with(
        ca: &Arc<ClusterCa>,
        tweak: impl FnOnce(NodeBuilder) -> NodeBuilder,
        server: impl Fn(&Arc<Knobs>, NodeBuilder) -> NodeBuilder,
        instances: usize,
    ) -> Self {
        Self::build(ca, 3, tweak, server, instances).await
    }

    /// `servers` servers s0.. (one instance each) and the caller built by `tweak`, all seeing
    /// every instance.
    pub async fn of(
        ca: &Arc<ClusterCa>,
        servers: usize,
        tweak: impl FnOnce(NodeBuilder) -> NodeBuilder,
    ) -> Self {
        Self::build(ca, servers, tweak, |_, b| b, 1).await
    }

    async fn build(
        ca: &Arc<ClusterCa>,
        count: usize,
        tweak: impl FnOnce(NodeBuilder) -> NodeBuilder,
        server: impl Fn(&Arc<Knobs>, NodeBuilder) -> NodeBuilder,
        instances: usize,
    ) -> Self {
        let caller = start(ca, "caller", None, tweak).await;
        let seed = Some(caller.addr());
        let mut servers = Vec::new();
        let mut knobs = Vec::new();
        let mut services = Vec::new();
        for i in 0..count {
            let name = format!("s{i}");
            let k = Knobs::new(&name);
            let node = start(ca, &name, seed, |b| server(&k, b)).await;
            services.push(serve_as(&node, SVC, &k, "1.0.0", &[], instances).await);
            servers.push(node);
            knobs.push(k);
        }
        let cluster = Self {
            caller,
            servers,
            knobs,
            services,
        };
        cluster.converge(count).await;
        cluster
    }

    /// The caller, then the servers.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.caller).chain(&self.servers)
    }

    /// Waits until every node sees `n` instances of [`SVC`].
    pub async fn converge(&self, n: usize) {
        for node in self.nodes() {
            converge(node, &format!("{n} instances of {SVC}"), |r| {
                r.instances(SVC).len() == n
            })
            .await;
        }
    }

    /// Executions per server.
    pub fn executed(&self) -> Vec<u64> {
        self.knobs.iter().map(|k| k.executed()).collect()
    }

    /// Shuts every node down.
    pub async fn shutdown(self) {
        shutdown_all(self.servers.into_iter().chain([self.caller])).await;
    }
}

/// Shuts nodes down gracefully, all at once (each takes a few gossip rounds to leave).
pub async fn shutdown_all(nodes: impl IntoIterator<Item = Node>) {
    let mut set = JoinSet::new();
    for node in nodes {
        set.spawn(node.shutdown());
    }
    while let Some(done) = within("shutdown", set.join_next()).await {
        done.expect("shutdown");
    }
}

/// How many answers came from each node.
pub fn tally(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for a in answers {
        *seen.entry(a.node.clone()).or_insert(0) += 1;
    }
    seen
}

/// How many of the calls in `seen` `node` answered.
pub fn share(seen: &BTreeMap<String, usize>, node: &str) -> usize {
    seen.get(node).copied().unwrap_or(0)
}

/// `calls` sequential `Who` calls by name from `client` with `strategy`.
pub async fn sequential(client: &Client, strategy: Strategy, calls: usize) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(calls);
    for _ in 0..calls {
        let answer = within("call", client.request(SVC, Who {}).strategy(strategy))
            .await
            .expect("call by name");
        answers.push(answer);
    }
    answers
}

/// `workers` tasks each making `calls` sequential `Who` calls with `strategy`.
pub async fn concurrent(
    client: &Client,
    strategy: Strategy,
    workers: usize,
    calls: usize,
) -> Vec<Answer> {
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let client = client.clone();
        set.spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..calls {
                answers.push(
                    client
                        .request(SVC, Who {})
                        .strategy(strategy)
                        .await
                        .expect("call by name"),
                );
            }
            answers
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = within("workers", set.join_next()).await {
        answers.extend(done.expect("worker"));
    }
    answers
}

/// Asserts each of `nodes` got a share of `calls` within 6 standard deviations of uniform:
/// by chance this fails about once in 10^8 runs.
pub fn assert_uniform(seen: &BTreeMap<String, usize>, nodes: &[&str], calls: usize, what: &str) {
    let p = 1.0 / nodes.len() as f64;
    let mean = calls as f64 * p;
    let sd = (calls as f64 * p * (1.0 - p)).sqrt();
    for node in nodes {
        let got = share(seen, node) as f64;
        assert!(
            (got - mean).abs() <= 6.0 * sd,
            "{what}: {node} got {got} of {calls} calls, expected {mean}±{:.0}: {seen:?}",
            6.0 * sd
        );
    }
    assert_eq!(seen.values().sum::<usize>(), calls, "{what}: {seen:?}");
}

/// This node's selector view of `node`'s instance of [`SVC`].
pub async fn report(client: &Client, node: &str) -> Option<InstanceReport> {
    client
        .instance_report(SVC)
        .await
        .into_iter()
        .find(|r| r.node == node)
}

/// Polls `node`'s instance report until `cond` holds.
pub async fn wait_report(
    client: &Client,
    node: &str,
    what: &str,
    cond: impl Fn(&InstanceReport) -> bool,
) -> InstanceReport {
    within(what, async {
        loop {
            if let Some(r) = report(client, node).await {
                if cond(&r) {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// The node each key's call lands on.
pub async fn owners(client: &Client, keys: &[String]) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for chunk in keys.chunks(16) {
        let mut set = JoinSet::new();
        for key in chunk {
            let client = client.clone();
            let key = key.clone();
            set.spawn(async move {
                let answer = client
                    .request(SVC, Who {})
                    .key(&key)
                    .await
                    .expect("keyed call");
                (key, answer.node)
            });
        }
        while let Some(done) = within("keyed calls", set.join_next()).await {
            let (key, node) = done.expect("task");
            owners.insert(key, node);
        }
    }
    owners
}
