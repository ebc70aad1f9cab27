//! Calling services: choosing an instance, attempts, retries, and the wire exchange.
//!
//! ```text
//! Client::request -> Call (builder.rs)      options: strategy, filters, key, retries, deadline
//!   -> client layers, if any (layered.rs)   user middleware around the logical call
//!   -> attempt::run (attempt.rs)            the selector's table (selector/), pick, launch,
//!                                           record, retry with backoff and budget, hedge
//!      -> this node's instance (payload.rs) straight into a mailbox, no encoding
//!      -> another node (exchange.rs)        one QUIC stream: header + body frames each way
//! ```

mod attempt;
mod builder;
mod defaults;
mod exchange;
mod layered;
mod payload;
mod route;
pub(crate) mod selector;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use colony_quic::Endpoint;

pub use builder::Call;
pub use defaults::CallDefaults;
pub use selector::InstanceReport;

use crate::broker::Broker;
use crate::error::{Code, Error};
use crate::layer::{Layers, Outgoing};
use crate::message::Message;
use crate::service::LocalServices;
use crate::sync::{LockRequest, Locks};
use attempt::Plan;
use route::NO_FILTER;
use selector::Selectors;

/// What a node's clients need to make calls: shared by every [`Client`] of the node.
pub(crate) struct Caller {
    pub(crate) name: String,
    /// Where peers reach this node (the advertised address).
    pub(crate) addr: SocketAddr,
    /// The bound socket address; cached, because asking quinn takes a lock and a syscall.
    local_addr: SocketAddr,
    pub(crate) endpoint: Endpoint,
    pub(crate) services: Arc<LocalServices>,
    pub(crate) selectors: Selectors,
    pub(crate) defaults: CallDefaults,
    pub(crate) layers: Layers,
    /// Pub/sub: publishes from this node's clients.
    pub(crate) broker: Arc<Broker>,
    /// Locks: this node's replica (server nodes) and what acquirers need.
    pub(crate) locks: Locks,
    next_request_id: AtomicU64,
}

impl Caller {
    // Each argument is a distinct part of the node; a parameter struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        addr: SocketAddr,
        endpoint: Endpoint,
        services: Arc<LocalServices>,
        selectors: Selectors,
        defaults: CallDefaults,
        layers: Layers,
        broker: Arc<Broker>,
        locks: Locks,
    ) -> Self {
        // Request ids only need to be distinct enough to follow a call in logs across nodes.
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            &name,
        );
        Self {
            local_addr: endpoint.local_addr(),
            name,
            addr,
            endpoint,
            services,
            selectors,
            defaults,
            layers,
            broker,
            locks,
            next_request_id: AtomicU64::new(seed >> 16),
        }
    }

    /// Whether `addr` is this node (its advertised or its bound address).
    pub(crate) fn is_self(&self, addr: SocketAddr) -> bool {
        addr == self.addr || addr == self.local_addr
    }

    pub(crate) fn request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Calls services, typed: `client.call("greeter", Hello { .. }).await?` returns `HelloReply`.
///
/// A call by name goes to an instance chosen by the service's selector: this node's own
/// instance (through the mailbox, no encoding) or another node's (over QUIC), by the node's
/// [`CallDefaults`] or the call's own options. A call with [`Call::at`] goes to that node.
#[derive(Clone)]
pub struct Client {
    pub(crate) caller: Arc<Caller>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("node", &self.caller.name)
            .finish()
    }
}

impl Client {
    pub(crate) fn new(caller: Arc<Caller>) -> Self {
        Self { caller }
    }

    /// Calls `service` wherever it runs, with the node's defaults.
    pub async fn call<M: Message>(&self, service: &str, request: M) -> Result<M::Reply, Error> {
        self.request(service, request).send().await
    }

    /// Calls `service` on the node at `node` with the default options.
    pub async fn call_at<M: Message>(
        &self,
        node: SocketAddr,
        service: &str,
        request: M,
    ) -> Result<M::Reply, Error> {
        self.request(service, request).at(node).send().await
    }

    /// A distributed lock on `key`: `client.lock("invoice-42").ttl(d).wait(d).await` returns a
    /// [`LockGuard`](crate::LockGuard) once a majority of the key's replicas granted it.
    pub fn lock(&self, key: impl Into<String>) -> LockRequest {
        LockRequest::new(self.clone(), key.into())
    }

    /// A call with options: `client.request("greeter", msg).timeout(d).idempotent().await`.
    pub fn request<'c, M: Message>(&'c self, service: &'c str, request: M) -> Call<'c, M> {
        Call::new(self, service, request)
    }

    /// Calls `endpoint` of `service` with a JSON request and returns the JSON reply, without
    /// Rust types: for tools, gateways and the `colony` CLI. Chooses the instance, retries and
    /// runs layers like [`call`](Client::call), with the node's defaults.
    pub async fn call_json(
        &self,
        service: &str,
        endpoint: &str,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let caller = &self.caller;
        let body = Bytes::from(
            serde_json::to_vec(request)
                .map_err(|e| Error::client(Code::BadRequest, format!("request: {e}")))?,
        );
        let run = |metadata, deadline| {
            let plan = Plan {
                service,
                now: Instant::now(),
                deadline,
                metadata,
                strategy: caller.defaults.strategy,
                key: None,
                filter: &NO_FILTER,
                retries: caller.defaults.retries,
                idempotent: false,
                hedge: false,
            };
            let payload = payload::Json {
                endpoint: endpoint.to_string(),
                body,
            };
            attempt::run(caller, plan, payload)
        };
        let deadline = Instant::now() + caller.defaults.timeout;
        let reply = if caller.layers.client.is_empty() {
            run(Default::default(), deadline).await?
        } else {
            let outgoing = Outgoing {
                service: service.to_string(),
                endpoint: endpoint.to_string(),
                metadata: Default::default(),
                deadline,
            };
            layered::through_layers(self, outgoing, run).await?
        };
        serde_json::from_slice(&reply)
            .map_err(|e| Error::client(Code::Internal, format!("reply is not JSON: {e}")))
    }

    /// What this node's selector knows of each instance of `service`: calls in flight,
    /// smoothed latency, failures, ejection. Empty if this node has not called the service.
    pub async fn instance_report(&self, service: &str) -> Vec<InstanceReport> {
        self.caller.selectors.report(service).await
    }
}
