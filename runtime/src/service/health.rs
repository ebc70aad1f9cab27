//! What a node reports about its services: running, degraded, restarting or failed.

use serde::{Deserialize, Serialize};

/// The state of one service on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ServiceStatus {
    /// Its instances are starting (their `started` hooks run): at spawn, or when the node
    /// restarts it after a failure. Not ready yet.
    Starting,
    /// Every instance asked for is running.
    Running,
    /// Some instances are restarting; the others serve.
    Degraded,
    /// Every instance is restarting: calls are refused with `Unavailable` until one is back.
    Restarting,
    /// The service failed past its restart budget: withdrawn from routing and gossip until the
    /// node restarts it (after its cool-down, or by hand).
    Failed,
    /// Being stopped on purpose (the node shuts down): its instances answer the calls they
    /// hold, then stop.
    Stopping,
}

impl ServiceStatus {
    /// How the CLI and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Starting => "starting",
            ServiceStatus::Running => "running",
            ServiceStatus::Degraded => "degraded",
            ServiceStatus::Restarting => "restarting",
            ServiceStatus::Failed => "failed",
            ServiceStatus::Stopping => "stopping",
        }
    }
}

/// One service's health on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The service.
    pub name: String,
    /// Running, degraded, restarting or failed.
    pub status: ServiceStatus,
    /// Instances asked for.
    pub instances: usize,
    /// Instances running now.
    pub live: usize,
    /// Calls in the instances' mailboxes, the ones being handled included.
    pub queued: u64,
    /// Instance restarts since the service was spawned on this node.
    pub restarts: u64,
    /// Times the service failed past its restart budget (and was withdrawn).
    pub escalations: u32,
    /// Why an instance or the service last failed.
    pub last_failure: Option<String>,
    /// How long ago that was, in milliseconds.
    pub last_failure_ms_ago: Option<u64>,
    /// For a failed service: in how many milliseconds the node restarts it (`None`: only by
    /// hand, with `ServiceRef::restart`).
    pub restart_in_ms: Option<u64>,
    /// Its subscriptions on this node: buffered, handled, failed and dropped events.
    #[serde(default)]
    pub subscriptions: Vec<crate::broker::SubscriptionStats>,
}

/// The state of a node as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeStatus {
    /// Every service is running.
    Healthy,
    /// At least one service is starting, degraded, restarting or failed (or, after a bug, the
    /// node's supervision tree has lost its root).
    Degraded,
    /// The node is shutting down: it takes no new calls.
    Draining,
}

impl NodeStatus {
    /// How the CLI and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Healthy => "healthy",
            NodeStatus::Degraded => "degraded",
            NodeStatus::Draining => "draining",
        }
    }
}

/// A node's health: its own state and each of its services'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The node's name.
    pub node: String,
    /// Healthy, degraded or draining.
    pub status: NodeStatus,
    /// Its services, by name (colony's own `colony.*` ones left out).
    pub services: Vec<ServiceHealth>,
    /// Its broker: what it publishes and receives.
    #[serde(default)]
    pub broker: BrokerHealth,
}

/// A node's broker counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BrokerHealth {
    /// At-least-once deliveries this node published and not yet acknowledged.
    pub unacknowledged: u64,
    /// At-most-once events that arrived for a subscription that had just ended: lost.
    pub unrouted: u64,
    /// Frames from peers that did not decode (skipped; the link went on).
    pub malformed_frames: u64,
    /// Frames lost when a link to a peer broke (at-least-once ones are resent).
    pub lost_frames: u64,
}

impl NodeHealth {
    pub(crate) fn of(
        node: String,
        draining: bool,
        unsupervised: bool,
        services: Vec<ServiceHealth>,
        broker: BrokerHealth,
    ) -> Self {
        let status = if draining {
            NodeStatus::Draining
        } else if !unsupervised && services.iter().all(|s| s.status == ServiceStatus::Running) {
            NodeStatus::Healthy
        } else {
            NodeStatus::Degraded
        };
        Self {
            node,
            status,
            services,
            broker,
        }
    }
}
