//! The cluster as one node sees it: members and the service instances they offer, rebuilt from
//! chitchat's live-node states on every change.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use chitchat::{ChitchatId, NodeState};
use serde::{Deserialize, Serialize};

use crate::sync::{leaders_in, Leader};

use crate::broker::{ClusterSubscriptions, SubscriptionAd, SubscriptionInfo};

/// Key prefix of a service advertisement in a node's gossip state: `svc:<name>`.
pub(crate) const SERVICE_PREFIX: &str = "svc:";
/// Key a node sets while it leaves, so peers stop routing to it at once.
pub(crate) const LEAVING_KEY: &str = "leaving";
/// Key holding the node's role.
pub(crate) const ROLE_KEY: &str = "role";

/// What a node gossips about one service it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceAd {
    pub(crate) version: String,
    pub(crate) endpoints: Vec<String>,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) actors: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) subscriptions: Vec<SubscriptionAd>,
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves services (a normal node).
    Server,
    /// Only calls and observes, like the `colony` CLI; never offered as a service instance.
    Client,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name: stable across restarts.
    pub name: String,
    /// Incarnation: grows with every restart of the node.
    pub generation: u64,
    /// Where the node serves calls and gossip.
    pub addr: SocketAddr,
    /// Server or client-only.
    pub role: Role,
    /// True while the node is shutting down: it takes no new calls.
    pub leaving: bool,
    /// The services it runs.
    pub services: Vec<String>,
}

/// One node's offer of one service: where a call by service name can go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// The service name.
    pub service: String,
    /// `service@node`: stable across restarts of the node.
    pub id: String,
    /// The version the service advertises.
    pub version: String,
    /// The node's name.
    pub node: String,
    /// The node's address.
    pub addr: SocketAddr,
    /// Endpoints the service answers.
    pub endpoints: Vec<String>,
    /// Free-form metadata from the service builder.
    pub metadata: BTreeMap<String, String>,
    /// How many instance actors serve it on that node.
    pub actors: usize,
    /// Its subscriptions on that node.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// An immutable picture of the cluster; a new one replaces it on every change.
#[derive(Debug, Default)]
pub(crate) struct ClusterView {
    /// Grows with every view a node builds (0: the empty view before the first).
    pub(crate) generation: u64,
    pub(crate) members: Vec<Member>,
    /// By instance id.
    pub(crate) instances: BTreeMap<String, ServiceInstance>,
    /// By service name, for the call path.
    pub(crate) by_service: HashMap<String, Vec<ServiceInstance>>,
    /// Every node's subscriptions, for publishers (client nodes' too: `colony subscribe`).
    pub(crate) subscriptions: ClusterSubscriptions,
    /// Elections' leaders as announced in gossip (of two claims, the larger token wins).
    pub(crate) leaders: HashMap<String, Leader>,
}

impl ClusterView {
    /// Builds the view from chitchat's live nodes. Of two live incarnations of one node name,
    /// the newest wins: a restarted node replaces its old self at once.
    pub(crate) fn from_live_nodes(nodes: &BTreeMap<ChitchatId, NodeState>) -> Self {
        let mut newest: BTreeMap<&str, (&ChitchatId, &NodeState)> = BTreeMap::new();
        for (id, state) in nodes {
            let slot = newest.entry(&id.node_id).or_insert((id, state));
            if id.generation_id > slot.0.generation_id {
                *slot = (id, state);
            }
        }
        let mut view = ClusterView::default();
        for (name, (id, state)) in newest {
            let leaving = state.get(LEAVING_KEY).is_some();
            let role = match state.get(ROLE_KEY) {
                Some("client") => Role::Client,
                _ => Role::Server,
            };
            let mut services = Vec::new();
            for (key, value) in state.key_values() {
                let Some(service) = key.strip_prefix(SERVICE_PREFIX) else {
                    continue;
                };
                let Ok(ad) = serde_json::from_str::<ServiceAd>(value) else {
                    tracing::debug!(
                        node = name,
                        key,
                        "ignoring unreadable service advertisement"
                    );
                    continue;
                };
                services.push(service.to_string());
                if leaving {
                    continue;
                }
                for sub in &ad.subscriptions {
                    view.subscriptions
                        .add(name, id.gossip_advertise_addr, service, sub.clone());
                }
                if role == Role::Client {
                    continue;
                }
                let instance = ServiceInstance {
                    service: service.to_string(),
                    id: format!("{service}@{name}"),
                    version: ad.version,
                    node: name.to_string(),
                    addr: id.gossip_advertise_addr,
                    endpoints: ad.endpoints,
                    metadata: ad.metadata,
                    actors: ad.actors,
                    subscriptions: ad.subscriptions.iter().map(Into::into).collect(),
                };
                view.by_service
                    .entry(instance.service.clone())
                    .or_default()
                    .push(instance.clone());
                view.instances.insert(instance.id.clone(), instance);
            }
            // Client-only nodes may lead too (they can hold locks); leaving ones no longer do.
            if !leaving {
                for (election, token) in leaders_in(state.key_values()) {
                    let leader = Leader {
                        node: name.to_string(),
                        addr: id.gossip_advertise_addr,
                        token,
                    };
                    match view.leaders.get(election) {
                        Some(other) if other.token >= token => {}
                        _ => {
                            view.leaders.insert(election.to_string(), leader);
                        }
                    }
                }
            }
            view.members.push(Member {
                name: name.to_string(),
                generation: id.generation_id,
                addr: id.gossip_advertise_addr,
                role,
                leaving,
                services,
            });
        }
        view
    }
}

impl ClusterView {
    /// Addresses of incarnations in `before` that are gone now. An incarnation is an address
    /// *and* a generation: a node restarted at the same address is a departure too, because the
    /// pooled connection still points at the dead process.
    pub(crate) fn departed_since(&self, before: &ClusterView) -> Vec<SocketAddr> {
        before
            .members
            .iter()
            .filter(|old| {
                !self
                    .members
                    .iter()
                    .any(|m| m.addr == old.addr && m.generation == old.generation)
            })
            .map(|m| m.addr)
            .collect()
    }
}

/// A change to the set of service instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A new instance appeared.
    Created(ServiceInstance),
    /// An instance changed (version, endpoints, metadata, address after a restart...).
    Updated(ServiceInstance),
    /// An instance went away: stopped, its node left or died.
    Deleted(ServiceInstance),
}

/// The events that turn `old` into `new`, in instance-id order.
pub(crate) fn diff(old: &ClusterView, new: &ClusterView) -> Vec<RegistryEvent> {
    let mut events = Vec::new();
    for (id, instance) in &new.instances {
        match old.instances.get(id) {
            None => events.push(RegistryEvent::Created(instance.clone())),
            Some(before) if before != instance => {
                events.push(RegistryEvent::Updated(instance.clone()))
            }
            Some(_) => {}
        }
    }
    for (id, instance) in &old.instances {
        if !new.instances.contains_key(id) {
            events.push(RegistryEvent::Deleted(instance.clone()));
        }
    }
    events
}

/// Shared, swappable view.
pub(crate) type SharedView = Arc<ClusterView>;

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, version: &str) -> ServiceInstance {
        ServiceInstance {
            service: "s".into(),
            id: id.into(),
            version: version.into(),
            node: "n".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            endpoints: vec![],
            metadata: BTreeMap::new(),
            actors: 1,
            subscriptions: vec![],
        }
    }

    fn view(instances: &[ServiceInstance]) -> ClusterView {
        ClusterView {
            instances: instances
                .iter()
                .map(|i| (i.id.clone(), i.clone()))
                .collect(),
            ..ClusterView::default()
        }
    }

    #[test]
    fn diff_reports_create_update_delete() {
        let old = view(&[instance("a", "1"), instance("b", "1")]);
        let new = view(&[instance("b", "2"), instance("c", "1")]);
        assert_eq!(
            diff(&old, &new),
            vec![
                RegistryEvent::Updated(instance("b", "2")),
                RegistryEvent::Created(instance("c", "1")),
                RegistryEvent::Deleted(instance("a", "1")),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
