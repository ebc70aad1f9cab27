//! The fixture messages and the service that answers them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{Code, Context, Error, Handler, Message, Node};
use colony::{ServiceBuilder, ServiceRef};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Echoes `text` back, with what the handler saw of the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    /// Text to echo.
    pub text: String,
}

/// The reply to [`Echo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoReply {
    /// The request's text.
    pub text: String,
    /// The value of metadata key `x-trace`, read in lower case by the handler.
    pub trace: Option<String>,
    /// Every metadata key as the handler saw it.
    pub metadata_keys: Vec<String>,
    /// Whether the call came from another node (`Context::peer` was set).
    pub remote: bool,
    /// The codec the request arrived in (`None` in-process).
    pub content_type: Option<String>,
    /// The service name in the handler's context.
    pub service: String,
    /// The endpoint name in the handler's context.
    pub endpoint: String,
}

impl Message for Echo {
    type Reply = EchoReply;
    const ENDPOINT: &'static str = "Fixture.Echo";
}

/// Makes the handler return `Error::new(Code::from(code), detail)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fail {
    /// The numeric code to fail with.
    pub code: u16,
    /// The detail to fail with.
    pub detail: String,
}

impl Message for Fail {
    type Reply = Done;
    const ENDPOINT: &'static str = "Fixture.Fail";
}

/// An empty reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {}

/// Sleeps `ms` milliseconds (tokio time) inside the handler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sleep {
    /// Milliseconds to sleep.
    pub ms: u64,
}

impl Message for Sleep {
    type Reply = Done;
    const ENDPOINT: &'static str = "Fixture.Sleep";
}

/// Records `tag` as started, then waits until the test opens the service's gate
/// ([`Stats::open_gate`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    /// Identifies the call in [`Stats::started`].
    pub tag: String,
}

/// The reply to [`Hold`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The request's tag.
    pub tag: String,
}

impl Message for Hold {
    type Reply = Held;
    const ENDPOINT: &'static str = "Fixture.Hold";
}

/// Like [`Hold`], but the reply carries `len` bytes: a reply that takes a while to deliver.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldBig {
    /// Identifies the call in [`Stats::started`].
    pub tag: String,
    /// Size of the reply's payload.
    pub len: usize,
}

/// The reply to [`HoldBig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldBig {
    /// The request's tag.
    pub tag: String,
    /// `len` bytes.
    pub bytes: Vec<u8>,
}

impl Message for HoldBig {
    type Reply = HeldBig;
    const ENDPOINT: &'static str = "Fixture.HoldBig";
}

/// Makes the handler panic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Panic {}

impl Message for Panic {
    type Reply = Done;
    const ENDPOINT: &'static str = "Fixture.Panic";
}

/// Counts calls answered by this incarnation of the instance (fresh state after a restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Count {}

impl Message for Count {
    type Reply = u64;
    const ENDPOINT: &'static str = "Fixture.Count";
}

/// Replies with `len` bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Blob {
    /// Size of the reply's payload.
    pub len: usize,
}

/// The reply to [`Blob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobReply {
    /// `len` bytes.
    pub bytes: Vec<u8>,
}

impl Message for Blob {
    type Reply = BlobReply;
    const ENDPOINT: &'static str = "Fixture.Blob";
}

/// A message the fixture service does not answer: its endpoint is unknown to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unanswered {}

impl Message for Unanswered {
    type Reply = Done;
    const ENDPOINT: &'static str = "Fixture.Unanswered";
}

// ---------------------------------------------------------------------------------------------
// The fixture service
// ---------------------------------------------------------------------------------------------

/// What a fixture service's instances did, shared across instances and restarts.
#[derive(Debug)]
pub struct Stats {
    started: Mutex<Vec<String>>,
    finished: AtomicU64,
    gate: Semaphore,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Mutex::new(Vec::new()),
            finished: AtomicU64::new(0),
            gate: Semaphore::new(0),
        }
    }
}

impl Stats {
    /// Tags of the [`Hold`] and [`HoldBig`] calls whose handler started, in order.
    pub fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }

    /// Number of [`Hold`] and [`HoldBig`] calls whose handler started.
    pub fn started_count(&self) -> usize {
        self.started.lock().unwrap().len()
    }

    /// Number of [`Hold`] and [`HoldBig`] calls whose handler finished.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }

    /// Lets every held call (and every later one) finish.
    pub fn open_gate(&self) {
        self.gate.close();
    }
}

/// The state of one fixture instance.
#[derive(Debug)]
pub struct Fixture {
    stats: Arc<Stats>,
    count: u64,
}

impl Default for Fixture {
    /// A fixture instance with statistics of its own.
    fn default() -> Self {
        Self {
            stats: Arc::default(),
            count: 0,
        }
    }
}

impl Handler<Echo> for Fixture {
    async fn handle(&mut self, req: Echo, ctx: &Context) -> Result<EchoReply, Error> {
        Ok(EchoReply {
            text: req.text,
            trace: ctx.metadata().get("x-trace").map(str::to_string),
            metadata_keys: ctx.metadata().iter().map(|(k, _)| k.to_string()).collect(),
            remote: ctx.peer().is_some(),
            content_type: ctx.content_type().map(|c| c.as_str().to_string()),
            service: ctx.service().to_string(),
            endpoint: ctx.endpoint().to_string(),
        })
    }
}

impl Handler<Fail> for Fixture {
    async fn handle(&mut self, req: Fail, _ctx: &Context) -> Result<Done, Error> {
        Err(Error::new(Code::from(req.code), req.detail))
    }
}

impl Handler<Sleep> for Fixture {
    async fn handle(&mut self, req: Sleep, _ctx: &Context) -> Result<Done, Error> {
        tokio::time::sleep(Duration::from_millis(req.ms)).await;
        Ok(Done {})
    }
}

impl Handler<Hold> for Fixture {
    async fn handle(&mut self, req: Hold, _ctx: &Context) -> Result<Held, Error> {
        self.hold(&req.tag).await;
        Ok(Held { tag: req.tag })
    }
}

impl Fixture {
    async fn hold(&self, tag: &str) {
        self.stats.started.lock().unwrap().push(tag.to_string());
        // A closed gate is an open one: acquire fails at once for everybody.
        let _ = self.stats.gate.acquire().await;
        self.stats.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl Handler<HoldBig> for Fixture {
    async fn handle(&mut self, req: HoldBig, _ctx: &Context) -> Result<HeldBig, Error> {
        self.hold(&req.tag).await;
        Ok(HeldBig {
            tag: req.tag,
            bytes: vec![0xcd; req.len],
        })
    }
}

impl Handler<Panic> for Fixture {
    async fn handle(&mut self, _req: Panic, _ctx: &Context) -> Result<Done, Error> {
        panic!("fixture asked to panic");
    }
}

impl Handler<Count> for Fixture {
    async fn handle(&mut self, _req: Count, _ctx: &Context) -> Result<u64, Error> {
        self.count += 1;
        Ok(self.count)
    }
}

impl Handler<Blob> for Fixture {
    async fn handle(&mut self, req: Blob, _ctx: &Context) -> Result<BlobReply, Error> {
        Ok(BlobReply {
            bytes: vec![0xab; req.len],
        })
    }
}

/// A running fixture service: its handle and its shared statistics.
#[derive(Debug, Clone)]
pub struct FixtureService {
    /// The service handle (restarts, live instances...).
    pub service: ServiceRef,
    /// What the instances did.
    pub stats: Arc<Stats>,
}

/// Every fixture endpoint except [`Unanswered`], answered by `S`.
pub fn fixture_endpoints<S>(builder: ServiceBuilder<S>) -> ServiceBuilder<S>
where
    S: Handler<Echo>
        + Handler<Fail>
        + Handler<Sleep>
        + Handler<Hold>
        + Handler<HoldBig>
        + Handler<Panic>
        + Handler<Count>
        + Handler<Blob>,
{
    builder
        .handler::<Echo>()
        .handler::<Fail>()
        .handler::<Sleep>()
        .handler::<Hold>()
        .handler::<HoldBig>()
        .handler::<Panic>()
        .handler::<Count>()
        .handler::<Blob>()
}

/// Runs the fixture service as `name` on `node` with `instances` instances, answering every
/// fixture message except [`Unanswered`].
pub async fn start_fixture(node: &Node, name: &str, instances: usize) -> FixtureService {
    start_fixture_with(node, name, |b| b.instances(instances)).await
}

/// [`start_fixture`] with the service builder adjusted by `tweak` (instances, mailbox...).
pub async fn start_fixture_with(
    node: &Node,
    name: &str,
    tweak: impl FnOnce(ServiceBuilder<Fixture>) -> ServiceBuilder<Fixture>,
) -> FixtureService {
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    let service = fixture_endpoints(tweak(node.service(name).version("1.0.0")))
        .spawn(move || Fixture {
            stats: shared.clone(),
            count: 0,
        })
        .await
        .expect("fixture service starts");
    FixtureService { service, stats }
}

/// Asks a node what its registry holds (served by `colony-test-node` as service [`INSPECT`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inspect {}

/// A node's view of the cluster, as [`Inspect`] returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// The answering node's name.
    pub node: String,
    /// Service name to instance ids, sorted.
    pub services: std::collections::BTreeMap<String, Vec<String>>,
    /// Member names, sorted.
    pub members: Vec<String>,
}

impl Message for Inspect {
    type Reply = NodeView;
    const ENDPOINT: &'static str = "Inspect.View";
}

/// Name of the introspection service every `colony-test-node` runs.
pub const INSPECT: &str = "inspect";

/// Answers [`Inspect`] from a node's registry.
#[derive(Debug, Clone)]
pub struct Inspector {
    /// The node's name.
    pub node: String,
    /// The node's registry.
    pub registry: colony::Registry,
}

impl Handler<Inspect> for Inspector {
    async fn handle(&mut self, _req: Inspect, _ctx: &Context) -> Result<NodeView, Error> {
        let services = self
            .registry
            .services()
            .into_iter()
            .map(|s| {
                let mut ids: Vec<String> = self
                    .registry
                    .instances(&s)
                    .into_iter()
                    .map(|i| i.id)
                    .collect();
                ids.sort();
                (s, ids)
            })
            .collect();
        Ok(NodeView {
            node: self.node.clone(),
            services,
            members: self
                .registry
                .members()
                .into_iter()
                .map(|m| m.name)
                .collect(),
        })
    }
}
