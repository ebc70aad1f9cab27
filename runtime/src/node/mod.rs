//! The node: one process's endpoint, its services, and the tasks that serve them.

mod builder;
pub(crate) mod introspect;
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

pub use builder::NodeBuilder;
use colony_quic::Endpoint;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{AckSink, Broker};
use crate::call::selector::{Selectors, Sources};
use crate::call::{CallDefaults, Caller, Client};
use crate::layer::Layers;
use crate::layer::ServeLayer;
use crate::membership::{GossipInbox, GossipStats, Member, Membership, Registry, Role};
use crate::service::node_supervisor::{self, NodeSupervisorMsg};
use crate::service::{
    stop_service, Host, LocalServices, NodeHealth, Roster, ServiceBuilder, RESERVED_PREFIX,
};
use crate::sync::{Election, LeaderWatch, LockRequest, LockSettings, Locks};
use colony_actors::ractor::ActorRef;

/// Starting a node failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The listen address does not parse as `ip:port`.
    Address(String),
    /// The CA or certificate could not be loaded or created.
    Identity(colony_quic::IdentityError),
    /// The UDP socket could not be bound.
    Bind(colony_quic::BindError),
    /// A start-up task failed.
    Io(String),
    /// Gossip membership could not start.
    Membership(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Address(a) => write!(f, "invalid listen address {a:?}: expected ip:port"),
            StartError::Identity(e) => write!(f, "node identity: {e}"),
            StartError::Bind(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "start-up failed: {e}"),
            StartError::Membership(e) => write!(f, "membership: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<colony_quic::IdentityError> for StartError {
    fn from(e: colony_quic::IdentityError) -> Self {
        StartError::Identity(e)
    }
}

impl From<colony_quic::BindError> for StartError {
    fn from(e: colony_quic::BindError) -> Self {
        StartError::Bind(e)
    }
}

/// State shared by the node handle and its serving tasks. Clients hold only the [`Caller`].
pub(crate) struct Shared {
    pub(crate) membership: Membership,
    pub(crate) gossip_inbox: GossipInbox,
    /// The node's name, address, endpoint and services, and what its clients call with:
    /// selectors, defaults, layers.
    pub(crate) caller: Arc<Caller>,
    /// Every service declared here, failed ones included, in start order.
    roster: Roster,
    /// The root of the supervision tree: every service's supervisor is linked under it.
    node_supervisor: OnceLock<ActorRef<NodeSupervisorMsg>>,
    /// Set when shutdown begins: no service starts or restarts from then on.
    shutting_down: AtomicBool,
    /// Set if the root of the supervision tree ended on its own (a bug): health says degraded.
    supervision_lost: AtomicBool,
    /// Calls being served; shutdown waits for these.
    pub(crate) calls: TaskTracker,
    /// Ends the accept and connection loops.
    pub(crate) cancel: CancellationToken,
}

impl Shared {
    fn new(
        name: String,
        endpoint: Endpoint,
        (membership, gossip_inbox): (Membership, GossipInbox),
        defaults: CallDefaults,
        layers: Layers,
        (lock_settings, role): (LockSettings, Role),
    ) -> Self {
        let addr = membership.advertise();
        let services = Arc::new(LocalServices::default());
        let selectors = Selectors::new(
            Sources {
                node: name.clone(),
                addr,
                registry: membership.registry().clone(),
                services: services.clone(),
            },
            defaults,
        );
        let broker = Broker::new(
            name.clone(),
            addr,
            endpoint.clone(),
            services.clone(),
            membership.registry().clone(),
        );
        let caller = Arc::new(Caller::new(
            name.clone(),
            addr,
            endpoint.clone(),
            services.clone(),
            selectors,
            defaults,
            layers,
            broker,
            Locks::new(&name, lock_settings, membership.registry().clone(), role),
        ));
        Self {
            membership,
            gossip_inbox,
            caller,
            roster: Roster::default(),
            node_supervisor: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
            supervision_lost: AtomicBool::new(false),
            calls: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// True once the cluster has heard the node leave: new calls are refused.
    pub(crate) fn refuses_calls(&self) -> bool {
        self.caller.services.is_closed()
    }

    pub(crate) fn health(&self) -> NodeHealth {
        let services = self
            .roster
            .in_start_order()
            .iter()
            .filter(|e| !e.name.starts_with(RESERVED_PREFIX))
            .map(|e| {
                let running = self.caller.services.get(&e.name).map(|(_, s)| s);
                e.health(running.as_deref())
            })
            .collect();
        NodeHealth::of(
            self.caller.name.clone(),
            self.shutting_down.load(Ordering::Acquire),
            self.supervision_lost.load(Ordering::Acquire),
            services,
            self.caller.broker.health(),
        )
    }

    /// The default deadline of a call that does not say.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.caller.defaults.timeout
    }
}

impl Host for Shared {
    fn node_name(&self) -> &str {
        &self.caller.name
    }
    fn services(&self) -> &LocalServices {
        &self.caller.services
    }
    fn roster(&self) -> &Roster {
        &self.roster
    }
    fn node_supervisor(&self) -> Option<ActorRef<NodeSupervisorMsg>> {
        self.node_supervisor.get().cloned()
    }
    fn membership(&self) -> &Membership {
        &self.membership
    }
    fn is_closing(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
    fn serve_layers(&self) -> Arc<[Arc<dyn ServeLayer>]> {
        self.caller.layers.serve.clone()
    }
    fn local_changed(&self, service: &str) {
        self.caller.selectors.local_changed(service);
    }
    fn acks(&self) -> Arc<dyn AckSink> {
        self.caller.broker.acks()
    }
}

/// A running node: an endpoint that serves this process's services to the cluster.
///
/// Dropping a node stops it at once (connections closed, actors stopped); call
/// [`shutdown`](Node::shutdown) to let in-flight calls finish first.
pub struct Node {
    shared: Arc<Shared>,
    shutdown_grace: Duration,
    stopped: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.shared.caller.name)
            .field("addr", &self.addr())
            .finish()
    }
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    async fn serve(shared: Arc<Shared>, shutdown_grace: Duration) -> Result<Self, StartError> {
        let host: Weak<dyn Host> = Arc::downgrade(&shared) as Weak<Shared>;
        let node = Arc::downgrade(&shared);
        let lost = move || {
            if let Some(node) = node.upgrade() {
                node.supervision_lost.store(true, Ordering::Release);
                tracing::error!(node = %node.caller.name, "the node-level supervisor ended: services are no longer supervised; restart the node");
            }
        };
        let root = node_supervisor::start(host, lost)
            .await
            .map_err(|e| StartError::Io(format!("node supervisor: {e}")))?;
        let _ = shared.node_supervisor.set(root);
        tokio::spawn(server::accept_loop(shared.clone()));
        // Selectors follow the gossip view: each actor rebuilds its table on every change.
        // The broker drops links to departed nodes and retries their at-least-once events.
        let mut view = shared.membership.registry().view();
        let caller = Arc::downgrade(&shared.caller);
        tokio::spawn(async move {
            let mut before = view.borrow().clone();
            while view.changed().await.is_ok() {
                let Some(caller) = caller.upgrade() else {
                    return;
                };
                caller.selectors.view_changed();
                let now = view.borrow_and_update().clone();
                caller.locks.view_changed(&now);
                caller.broker.view_changed(&before, &now);
                before = now;
            }
        });
        introspect::serve(&shared).await?;
        crate::sync::serve(&shared)
            .await
            .map_err(|e| StartError::Io(format!("lock replica: {e}")))?;
        tracing::info!(node = %shared.caller.name, addr = %shared.caller.addr, "node started");
        Ok(Node {
            shared,
            shutdown_grace,
            stopped: false,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.shared.caller.name
    }

    /// The address peers call this node at: the advertised address if one was set, else the
    /// bound one.
    pub fn addr(&self) -> SocketAddr {
        self.shared.caller.addr
    }

    /// A client that calls services from this node. Cheap to clone.
    pub fn client(&self) -> Client {
        Client::new(self.shared.caller.clone())
    }

    /// Declares a service to run on this node; see [`ServiceBuilder`].
    pub fn service<S: Send + 'static>(&self, name: impl Into<String>) -> ServiceBuilder<S> {
        ServiceBuilder::new(self.shared.clone(), name.into())
    }

    /// A distributed lock on `key`, granted by a majority of its replicas; see
    /// [`LockRequest`] and `docs/locks.md`.
    pub fn lock(&self, key: impl Into<String>) -> LockRequest {
        self.client().lock(key)
    }

    /// Campaigns for leadership of `name`: resolves once this node leads (a lock on
    /// `colony.leader/<name>`, renewed while the [`Leadership`](crate::Leadership) lives).
    pub fn elect(&self, name: impl Into<String>) -> Election {
        Election::new(self.shared.clone(), name.into())
    }

    /// Who leads `name`, from this node's gossip view, and a wait for changes.
    pub fn leader_of(&self, name: impl Into<String>) -> LeaderWatch {
        LeaderWatch::new(self.registry().view(), name.into())
    }

    /// This node's view of the cluster: services, instances, members, and a watch of changes.
    pub fn registry(&self) -> &Registry {
        self.shared.membership.registry()
    }

    /// Live members of the cluster as this node sees them (itself included).
    pub fn members(&self) -> Vec<Member> {
        self.registry().members()
    }

    /// Gossip traffic counters.
    pub fn gossip_stats(&self) -> GossipStats {
        self.shared.membership.stats()
    }

    /// Names of the services running on this node (colony's own `colony.*` ones left out).
    pub fn services(&self) -> Vec<String> {
        self.shared
            .caller
            .services
            .names()
            .iter()
            .filter(|n| !n.starts_with(RESERVED_PREFIX))
            .map(|n| n.to_string())
            .collect()
    }

    /// This node's health: its services (running, degraded, restarting or failed, with live
    /// instances, restarts and last failure) and its own state. `colony health` asks for it.
    pub fn health(&self) -> NodeHealth {
        self.shared.health()
    }

    /// Fault injection, for tests and chaos drills: drops all traffic to and from these peers
    /// (their [`Node::addr`]), as a network partition would. Calls and gossip to them fail by
    /// timeouts, and they stop hearing from this node. Adds to the peers already cut; see
    /// [`Endpoint::cut_off`].
    pub fn cut_off(&self, peers: impl IntoIterator<Item = SocketAddr>) {
        self.shared.caller.endpoint.cut_off(peers);
    }

    /// Heals what [`cut_off`](Self::cut_off) did: traffic to and from every peer flows again.
    pub fn restore(&self) {
        self.shared.caller.endpoint.restore();
    }

    /// Stops gracefully, within the shutdown grace:
    /// 1. no service starts or restarts any more;
    /// 2. the node tells the cluster it is leaving and withdraws its services, so peers stop
    ///    routing here, while it still serves;
    /// 3. new calls are refused with `Unavailable`; calls in flight finish;
    /// 4. services stop in the reverse of their start order, each answering the calls still in
    ///    its instances' mailboxes and running their `stopping` hooks first;
    /// 5. gossip stops and connections close.
    pub async fn shutdown(mut self) {
        self.stopped = true;
        let shared = self.shared.clone();
        let deadline = Instant::now() + self.shutdown_grace;
        shared.shutting_down.store(true, Ordering::Release);
        shared.membership.leave().await;
        shared.caller.services.close();
        shared.calls.close();
        if tokio::time::timeout_at(deadline.into(), shared.calls.wait())
            .await
            .is_err()
        {
            tracing::warn!(node = %shared.caller.name, "calls still running after the shutdown grace");
        }
        for entry in shared.roster.in_start_order().iter().rev() {
            entry.stopping();
            if let Some(service) = shared.caller.services.remove(&entry.name) {
                shared.local_changed(&entry.name);
                let grace = deadline.saturating_duration_since(Instant::now());
                stop_service(service.as_ref(), grace).await;
            }
        }
        // Left over only if one started against all checks; stopped, not left running.
        for service in shared.caller.services.drain() {
            stop_service(service.as_ref(), Duration::ZERO).await;
        }
        // What this node published leaves it, and its at-least-once deliveries are answered,
        // within what is left of the grace.
        let grace = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = shared.caller.broker.flush(grace).await {
            tracing::warn!(node = %shared.caller.name, error = %e, "published events still pending at shutdown");
        }
        shared.caller.broker.stop();
        // Connections were accepted until now so that health could still be asked.
        shared.caller.endpoint.stop_accepting();
        if let Some(root) = shared.node_supervisor.get() {
            root.stop(None);
        }
        shared.caller.selectors.stop_all();
        shared.membership.stop().await;
        shared.cancel.cancel();
        shared.caller.endpoint.close(Duration::from_secs(1)).await;
        tracing::info!(node = %shared.caller.name, "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let shared = &self.shared;
        shared.shutting_down.store(true, Ordering::Release);
        shared.caller.services.close();
        shared.cancel.cancel();
        // Clients may keep `Shared` alive: gossip must not outlive the node.
        shared.membership.stop_now();
        shared.caller.selectors.stop_all();
        shared.caller.broker.stop();
        for service in shared.caller.services.drain() {
            service.supervisor().stop(Some("node dropped".into()));
        }
        if let Some(root) = shared.node_supervisor.get() {
            root.stop(None);
        }
        // Closing the endpoint ends every connection, and with it every stream task.
        shared.caller.endpoint.close_now();
    }
}
