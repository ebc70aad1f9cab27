//! `Node::builder()...start()`: configuring and starting a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use colony_quic::{ClusterCa, Endpoint, Identity, TransportConfig};

use super::{Node, Shared, StartError};
use crate::call::CallDefaults;
use crate::layer::{ClientLayer, Layers, ServeLayer};
use crate::membership::{Membership, MembershipConfig, Role};
use crate::sync::LockSettings;

enum Trust {
    /// The per-user CA in this directory (created if absent).
    CaDir(Option<PathBuf>),
    /// A CA held in memory; the node issues itself a certificate from it.
    Ca(Arc<ClusterCa>),
    /// An identity issued elsewhere.
    Identity(Identity),
}

/// Configures a [`Node`]. Every setting has a default that works on one machine.
#[must_use = "a node starts only with .start()"]
pub struct NodeBuilder {
    name: Option<String>,
    listen: String,
    trust: Trust,
    transport: TransportConfig,
    defaults: CallDefaults,
    client_layers: Vec<Arc<dyn ClientLayer>>,
    serve_layers: Vec<Arc<dyn ServeLayer>>,
    shutdown_grace: Duration,
    membership: MembershipConfig,
    locks: LockSettings,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            name: None,
            listen: "127.0.0.1:0".into(),
            trust: Trust::CaDir(None),
            transport: TransportConfig::default(),
            defaults: CallDefaults::default(),
            client_layers: Vec::new(),
            serve_layers: Vec::new(),
            shutdown_grace: Duration::from_secs(10),
            membership: MembershipConfig::default(),
            locks: LockSettings::default(),
        }
    }
}

impl NodeBuilder {
    /// The node's name (default: `node-<pid>-<port>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The UDP address to serve on (default `127.0.0.1:0`, a free loopback port).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Trust this cluster CA and issue the node's certificate from it.
    pub fn ca(mut self, ca: Arc<ClusterCa>) -> Self {
        self.trust = Trust::Ca(ca);
        self
    }

    /// Use the per-user CA kept in `dir` instead of `$COLONY_HOME` / `~/.colony`.
    pub fn ca_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.trust = Trust::CaDir(Some(dir.into()));
        self
    }

    /// Use a certificate issued elsewhere; the node then needs no CA key.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.trust = Trust::Identity(identity);
        self
    }

    /// Transport limits and timers (frame size, stream limits, keep-alive...).
    pub fn transport(mut self, config: TransportConfig) -> Self {
        self.transport = config;
        self
    }

    /// Largest frame sent or accepted, in bytes (default 16 MiB).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.transport.max_frame = bytes;
        self
    }

    /// Default deadline of calls made by this node's clients (default 30 s, as go-micro).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.defaults.timeout = timeout;
        self
    }

    /// How this node's clients call by default: strategy, retries, backoff, per-attempt
    /// timeouts, ejection and retry budget (see [`CallDefaults`]). Sets the call timeout too.
    pub fn client_defaults(mut self, defaults: CallDefaults) -> Self {
        self.defaults = defaults;
        self
    }

    /// Adds a layer around every call this node's clients make (outermost first, in the order
    /// added); see [`layer`](crate::layer).
    pub fn layer(mut self, layer: impl ClientLayer) -> Self {
        self.client_layers.push(Arc::new(layer));
        self
    }

    /// Adds a layer around every call this node's services answer, before delivery to an
    /// instance; see [`layer`](crate::layer).
    pub fn serve_layer(mut self, layer: impl ServeLayer) -> Self {
        self.serve_layers.push(Arc::new(layer));
        self
    }

    /// How long [`Node::shutdown`] lets in-flight calls finish (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The cluster to join (default `"colony"`): nodes of different clusters never merge.
    pub fn cluster(mut self, id: impl Into<String>) -> Self {
        self.membership.cluster = id.into();
        self
    }

    /// Nodes to join through, as `host:port`. Without seeds the node starts a cluster of its own
    /// that others can join through it.
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.membership.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The address peers should use for this node, when it differs from the listen address
    /// (listening on `0.0.0.0`, NAT...).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.membership.advertise = Some(addr);
        self
    }

    /// Joins as a client-only member (like the `colony` CLI): it sees and calls the cluster but
    /// is never offered as a service instance.
    pub fn client_only(mut self) -> Self {
        self.membership.role = Role::Client;
        self
    }

    /// Every gossip and failure-detection setting at once.
    pub fn membership(mut self, config: MembershipConfig) -> Self {
        self.membership = config;
        self
    }

    /// The cluster's lock settings (every node must use the same); see `docs/locks.md`.
    pub fn locks(mut self, settings: LockSettings) -> Self {
        self.locks = settings;
        self
    }

    /// The longest lease the cluster grants, and so the quarantine of a replica new to a key
    /// (default 15 s; every node must use the same).
    pub fn lock_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.locks.max_ttl = max_ttl;
        self
    }

    /// Binds the endpoint and starts serving. Must run inside a tokio runtime.
    pub async fn start(self) -> Result<Node, StartError> {
        let addr: SocketAddr = self
            .listen
            .parse()
            .map_err(|_| StartError::Address(self.listen.clone()))?;
        let provisional = self
            .name
            .clone()
            .unwrap_or_else(|| format!("node-{}", std::process::id()));
        let identity = match self.trust {
            Trust::Identity(identity) => identity,
            Trust::Ca(ca) => ca.issue(&provisional)?,
            Trust::CaDir(dir) => {
                let dir = match dir {
                    Some(dir) => dir,
                    None => ClusterCa::default_dir()?,
                };
                // Blocking file I/O, once at start-up.
                let ca = tokio::task::spawn_blocking(move || ClusterCa::load_or_create(&dir))
                    .await
                    .map_err(|e| StartError::Io(e.to_string()))??;
                ca.issue(&provisional)?
            }
        };
        let endpoint = Endpoint::bind(addr, &identity, self.transport)?;
        let local = endpoint.local_addr();
        let name = self
            .name
            .unwrap_or_else(|| format!("node-{}-{}", std::process::id(), local.port()));
        let membership = Membership::start(&endpoint, &name, &self.membership)
            .await
            .map_err(|e| StartError::Membership(e.0))?;
        let layers = Layers {
            client: self.client_layers.into(),
            serve: self.serve_layers.into(),
        };
        let shared = Arc::new(Shared::new(
            name,
            endpoint,
            membership,
            self.defaults,
            layers,
            (self.locks, self.membership.role),
        ));
        Node::serve(shared, self.shutdown_grace).await
    }
}
