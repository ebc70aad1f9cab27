//! Shared fixtures for colony's integration tests.
//!
//! - Message types and the [`Fixture`] service that answers them: echo (with what the handler saw
//!   of its call), chosen errors, sleeps, calls held until a test opens a gate, panics, counters
//!   and large replies.
//! - Node start helpers that use an in-memory [`ClusterCa`], never the per-user CA.
//! - [`wait_until`] and [`within`]: bounded polling and bounded waits, so a broken test fails
//!   instead of hanging.
//! - A hand-made wire client ([`raw_call`] and the header helpers) for bytes no typed client sends.
//! - [`ChildNode`]: a node in another OS process, killed when the guard drops.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use colony::{ClusterCa, Code, Context, Error, Handler, Message, Metadata, Node, NodeBuilder};
use colony::{ServiceRef, TransportConfig};
use colony_quic::{frame, Endpoint};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Longest any single wait in a test may take before the test is declared hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(20);

/// Name under which [`start_fixture`] usually runs the fixture service.
pub const FIXTURE: &str = "fixture";

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

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

/// Runs the fixture service as `name` on `node` with `instances` instances, answering every
/// fixture message except [`Unanswered`].
pub async fn start_fixture(node: &Node, name: &str, instances: usize) -> FixtureService {
    let stats = Arc::new(Stats::default());
    let shared = stats.clone();
    let service = node
        .service(name)
        .version("1.0.0")
        .instances(instances)
        .handler::<Echo>()
        .handler::<Fail>()
        .handler::<Sleep>()
        .handler::<Hold>()
        .handler::<HoldBig>()
        .handler::<Panic>()
        .handler::<Count>()
        .handler::<Blob>()
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

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Hand-made wire client
// ---------------------------------------------------------------------------------------------

/// A bare QUIC endpoint on `127.0.0.1:0` with a certificate from `ca` and default limits.
pub fn raw_endpoint(ca: &ClusterCa) -> Endpoint {
    let identity = ca.issue("raw").expect("issue raw identity");
    Endpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        &identity,
        TransportConfig::default(),
    )
    .expect("bind raw endpoint")
}

/// A request header as a JSON tool writes it.
pub fn json_header(
    service: &str,
    endpoint: &str,
    content_type: &str,
    request_id: u64,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let metadata: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "service": service,
        "endpoint": endpoint,
        "content_type": content_type,
        "timeout_ms": 10_000,
        "request_id": request_id,
        "metadata": metadata,
    }))
    .unwrap()
}

/// The request header in its binary form, field for field as the runtime's (private) one.
#[derive(Debug, Serialize)]
struct BincodeRequestHeader {
    service: String,
    endpoint: String,
    content_type: String,
    timeout_ms: u64,
    request_id: u64,
    metadata: Metadata,
}

/// A request header in the binary form: `0x00` then bincode.
pub fn bincode_header(
    service: &str,
    endpoint: &str,
    content_type: &str,
    request_id: u64,
) -> Vec<u8> {
    let header = BincodeRequestHeader {
        service: service.into(),
        endpoint: endpoint.into(),
        content_type: content_type.into(),
        timeout_ms: 10_000,
        request_id,
        metadata: Metadata::default(),
    };
    let mut out = vec![0x00];
    out.extend(bincode::serde::encode_to_vec(&header, bincode::config::standard()).unwrap());
    out
}

/// Frames each part with a 4-byte length prefix, unlimited in size.
pub fn frames(parts: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    for part in parts {
        frame::encode_frame(&mut out, part, usize::MAX).unwrap();
    }
    out.freeze()
}

/// How a reply header was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFormat {
    /// `0x00` then bincode.
    Bincode,
    /// JSON text.
    Json,
}

/// A reply header, decoded.
#[derive(Debug, Clone, Deserialize)]
pub struct RawReplyHeader {
    /// The request id the server echoed.
    pub request_id: u64,
    /// The call's error, if it failed.
    #[serde(default)]
    pub error: Option<Error>,
}

/// What came back on a hand-made call's stream.
#[derive(Debug)]
pub struct RawReply {
    /// The reply header frame exactly as received.
    pub header_bytes: Bytes,
    /// The header's encoding.
    pub format: HeaderFormat,
    /// The decoded header.
    pub header: RawReplyHeader,
    /// The body frame.
    pub body: Bytes,
    /// Index of the stream on its connection (0 for the first stream of a connection).
    pub stream_index: u64,
}

/// Decodes a reply header frame in either format.
pub fn decode_reply_header(bytes: &[u8]) -> (HeaderFormat, RawReplyHeader) {
    match bytes.first() {
        Some(0x00) => {
            let (header, used) =
                bincode::serde::decode_from_slice(&bytes[1..], bincode::config::standard())
                    .expect("bincode reply header");
            assert_eq!(used, bytes.len() - 1, "trailing bytes after reply header");
            (HeaderFormat::Bincode, header)
        }
        Some(b'{') => (
            HeaderFormat::Json,
            serde_json::from_slice(bytes).expect("JSON reply header"),
        ),
        other => panic!("reply header starts with {other:?}"),
    }
}

/// Opens a stream to `addr`, writes `bytes` (ignoring a write refused by the server), finishes,
/// and reads the reply: `Err` with the reason when the stream gives no reply header.
pub async fn raw_call(
    endpoint: &Endpoint,
    addr: SocketAddr,
    bytes: Bytes,
) -> Result<RawReply, String> {
    let (mut send, mut recv) = endpoint
        .open(addr)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let stream_index = send.id().index();
    // The server may stop reading before everything is written; its reply still explains why.
    let _ = frame::write_frames(&mut send, bytes).await;
    let _ = send.finish();
    let limit = 16 * 1024 * 1024;
    let header_bytes = frame::read_frame(&mut recv, limit)
        .await
        .map_err(|e| format!("reply header: {e}"))?;
    let (format, header) = decode_reply_header(&header_bytes);
    let body = frame::read_frame(&mut recv, limit)
        .await
        .map_err(|e| format!("reply body: {e}"))?;
    match frame::read_frame(&mut recv, limit).await {
        Err(colony_quic::ReadError::Finished) => {}
        other => return Err(format!("expected the reply to end, got {other:?}")),
    }
    Ok(RawReply {
        header_bytes,
        format,
        header,
        body,
        stream_index,
    })
}

// ---------------------------------------------------------------------------------------------
// Files and processes
// ---------------------------------------------------------------------------------------------

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temporary directory.
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "colony-tests-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `ca` as `ca.pem` in a new temporary directory, for `NodeBuilder::ca_dir`.
pub fn write_ca_dir(ca: &ClusterCa) -> TempDir {
    let dir = TempDir::new("ca");
    std::fs::write(dir.path().join(colony_quic::CA_FILE), ca.to_pem()).expect("write CA");
    dir
}

/// A node running in a child process (the `colony-test-node` binary). Dropping the guard kills
/// the process and reaps it, whatever path the test takes.
#[derive(Debug)]
pub struct ChildNode {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl ChildNode {
    /// Starts `exe --ca-dir <ca_dir> --name <name>` and waits (bounded) for its
    /// `LISTENING <addr>` line. Blocking: call it from `spawn_blocking` in async tests.
    pub fn spawn(exe: &Path, ca_dir: &Path, name: &str) -> Self {
        Self::spawn_with(exe, ca_dir, name, &[])
    }

    /// [`spawn`](Self::spawn) with extra arguments (`--seed ADDR`, `--service NAME`).
    pub fn spawn_with(exe: &Path, ca_dir: &Path, name: &str, extra: &[String]) -> Self {
        let child = Command::new(exe)
            .arg("--ca-dir")
            .arg(ca_dir)
            .arg("--name")
            .arg(name)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start colony-test-node");
        // From here on the guard owns the process: any panic below kills it.
        let mut guard = ChildNode {
            child,
            stdin: None,
            addr: "127.0.0.1:0".parse().unwrap(),
        };
        guard.stdin = guard.child.stdin.take();
        let stdout = guard.child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining stdout after the address line so the child never blocks on it.
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        let line = rx
            .recv_timeout(HANG_LIMIT)
            .expect("colony-test-node printed no LISTENING line");
        guard.addr = line.parse().expect("LISTENING address parses");
        guard
    }

    /// The child node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Closes the child's stdin, which asks it to shut down.
    pub fn close_stdin(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
    }

    /// Waits (bounded, polling) for the child to exit.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until(
            || {
                status = self.child.try_wait().expect("try_wait");
                status.is_some()
            },
            "the child node to exit",
        )
        .await;
        status.unwrap()
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
