//! Membership by gossip: no registry server. Each node gossips (chitchat) the services it runs
//! in its own state; every node folds the live nodes' states into a [`Registry`] view.

mod gossip;
mod registry;
mod view;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use colony_quic::Endpoint;
use tokio::sync::watch;

pub(crate) use gossip::{GossipCounters, GossipInbox, GOSSIP};
pub use registry::{Registry, Watch};
pub(crate) use view::ServiceAd;
pub(crate) use view::{ClusterView, SharedView};
pub use view::{Member, RegistryEvent, Role, ServiceInstance};
use view::{LEAVING_KEY, ROLE_KEY, SERVICE_PREFIX};

/// How a node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Cluster id: nodes of different clusters never merge, even with the same CA. Default
    /// `"colony"`.
    pub cluster: String,
    /// `host:port` of nodes to join through. Empty: start a new cluster.
    pub seeds: Vec<String>,
    /// Address peers reach this node at; default the listen address (which must then not be
    /// `0.0.0.0`).
    pub advertise: Option<SocketAddr>,
    /// Server, or client-only (the CLI): a client-only node is a member but offers nothing.
    pub role: Role,
    /// How often a node gossips. Default 200 ms.
    pub gossip_interval: Duration,
    /// Suspicion level at which a silent node is declared dead: the multiple of the mean
    /// heartbeat interval that may pass without news. Default 8 (with 200 ms gossip: ~1.6 s).
    pub phi_threshold: f64,
    /// How long a dead node's state is kept before it is garbage-collected. Default 30 s.
    pub dead_node_grace: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            cluster: "colony".into(),
            seeds: Vec::new(),
            advertise: None,
            role: Role::Server,
            gossip_interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            dead_node_grace: Duration::from_secs(30),
        }
    }
}

/// Gossip traffic of one node since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GossipStats {
    /// Bytes of gossip sent (payloads, excluding QUIC and TLS overhead).
    pub bytes_sent: u64,
    /// Bytes of gossip received.
    pub bytes_received: u64,
    /// Malformed or unread gossip messages dropped.
    pub rejected: u64,
}

/// Starting membership failed.
#[derive(Debug)]
pub(crate) struct MembershipError(pub(crate) String);

/// A node's part in the cluster: its chitchat instance and the view built from it.
pub(crate) struct Membership {
    advertise: SocketAddr,
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    registry: Registry,
    counters: Arc<GossipCounters>,
    gossip_interval: Duration,
    view_task: tokio::task::JoinHandle<()>,
}

impl Membership {
    pub(crate) async fn start(
        endpoint: &Endpoint,
        name: &str,
        config: &MembershipConfig,
    ) -> Result<(Self, GossipInbox), MembershipError> {
        let advertise = config.advertise.unwrap_or_else(|| endpoint.local_addr());
        if advertise.ip().is_unspecified() {
            return Err(MembershipError(format!(
                "cannot advertise {advertise} to peers: set an advertise address"
            )));
        }
        let counters = Arc::new(GossipCounters::default());
        let (transport, inbox) = gossip::QuicGossip::new(endpoint.clone(), counters.clone());
        // A restarted node gets a higher generation, so peers replace its old incarnation.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(name.to_string(), generation, advertise),
            cluster_id: config.cluster.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: advertise,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                // chitchat smooths the mean interval toward this prior; its 5 s default would
                // make detection take tens of seconds.
                initial_interval: config.gossip_interval,
                dead_node_grace_period: config.dead_node_grace,
            },
            marked_for_deletion_grace_period: config.dead_node_grace * 2,
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let initial = vec![(ROLE_KEY.to_string(), config.role.as_str().to_string())];
        let handle = spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .map_err(|e| MembershipError(e.to_string()))?;
        let chitchat = handle.chitchat();
        let mut live = chitchat.lock().await.live_nodes_watcher();
        let (view_tx, view_rx) = watch::channel(Arc::new(ClusterView::default()));
        let generation = Arc::new(AtomicU64::new(0));
        let published = generation.clone();
        let endpoint = endpoint.clone();
        let view_task = tokio::spawn(async move {
            loop {
                let mut view = ClusterView::from_live_nodes(&live.borrow_and_update());
                // The number goes up before the view is sent: whoever can see the new view also
                // sees that any table built from an older one is stale.
                view.generation = published.load(Ordering::Relaxed) + 1;
                published.store(view.generation, Ordering::Release);
                let view = Arc::new(view);
                let before = view_tx.send_replace(view.clone());
                // A dead peer's connection would hold calls until its idle timeout: close it.
                for gone in view.departed_since(&before) {
                    endpoint.disconnect(gone);
                }
                if live.changed().await.is_err() {
                    return;
                }
            }
        });
        let membership = Membership {
            advertise,
            handle: tokio::sync::Mutex::new(Some(handle)),
            chitchat,
            registry: Registry::new(view_rx, generation),
            counters,
            gossip_interval: config.gossip_interval,
            view_task,
        };
        Ok((membership, inbox))
    }

    /// The address this node gossips as, and that peers call it at.
    pub(crate) fn advertise(&self) -> SocketAddr {
        self.advertise
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn stats(&self) -> GossipStats {
        use std::sync::atomic::Ordering::Relaxed;
        GossipStats {
            bytes_sent: self.counters.bytes_sent.load(Relaxed),
            bytes_received: self.counters.bytes_received.load(Relaxed),
            rejected: self.counters.rejected.load(Relaxed),
        }
    }

    /// Advertises (or re-advertises) a service this node runs.
    pub(crate) async fn publish(&self, service: &str, ad: &ServiceAd) {
        let value = serde_json::to_string(ad).unwrap_or_default();
        let mut chitchat = self.chitchat.lock().await;
        chitchat
            .self_node_state()
            .set(format!("{SERVICE_PREFIX}{service}"), value);
    }

    /// Sets a key of this node's own gossip state (leader announcements).
    pub(crate) async fn set_key(&self, key: &str, value: &str) {
        let mut chitchat = self.chitchat.lock().await;
        chitchat.self_node_state().set(key, value);
    }

    /// Deletes a key of this node's own gossip state if it still holds `value`.
    pub(crate) async fn delete_key_if(&self, key: &str, value: &str) {
        let mut chitchat = self.chitchat.lock().await;
        let state = chitchat.self_node_state();
        if state.get(key) == Some(value) {
            state.delete(key);
        }
    }

    /// Stops advertising a service.
    pub(crate) async fn withdraw(&self, service: &str) {
        let mut chitchat = self.chitchat.lock().await;
        chitchat
            .self_node_state()
            .delete(&format!("{SERVICE_PREFIX}{service}"));
    }

    /// Tells the cluster this node is leaving and withdraws its services, then gives gossip a
    /// few rounds to carry the news, so peers stop routing here before the node stops serving.
    pub(crate) async fn leave(&self) {
        let peers: Vec<SocketAddr> = {
            let mut chitchat = self.chitchat.lock().await;
            let state = chitchat.self_node_state();
            state.set(LEAVING_KEY, "true");
            let keys: Vec<String> = state
                .key_values()
                .filter(|(k, _)| k.starts_with(SERVICE_PREFIX))
                .map(|(k, _)| k.to_string())
                .collect();
            for key in keys {
                state.delete(&key);
            }
            // Every node we know of, not only the ones the failure detector already calls live:
            // a peer seen for the first time moments ago must hear of the leave too.
            let me = chitchat.self_chitchat_id().clone();
            chitchat
                .node_states()
                .keys()
                .filter(|id| **id != me)
                .map(|id| id.gossip_advertise_addr)
                .collect()
        };
        if peers.is_empty() {
            return;
        }
        if let Some(handle) = self.handle.lock().await.as_ref() {
            for peer in &peers {
                let _ = handle.gossip(*peer);
            }
        }
        // Bounded: a peer that missed these rounds still drops us when we stop heartbeating.
        tokio::time::sleep(self.gossip_interval * 3).await;
    }

    /// Stops gossiping.
    pub(crate) async fn stop(&self) {
        if let Some(handle) = self.handle.lock().await.take() {
            let _ = handle.shutdown().await;
        }
        self.view_task.abort();
    }
}

impl Membership {
    /// Stops gossiping at once, without waiting (for `Drop` of the node, which cannot await).
    pub(crate) fn stop_now(&self) {
        // Dropping the chitchat handle closes its command channel, which ends its loop.
        if let Ok(mut handle) = self.handle.try_lock() {
            handle.take();
        }
        self.view_task.abort();
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_now();
    }
}
