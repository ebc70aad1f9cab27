//! The instance table a selector publishes: what callers read on every call, lock-free.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use colony_actors::selector::{stable_hash, Candidate, Load};
use serde::{Deserialize, Serialize};

use crate::membership::{ClusterView, ServiceInstance};
use crate::service::LocalService;

/// A service running on this node, as the call path needs it.
pub(crate) type LocalHandle = (Arc<str>, Arc<dyn LocalService>);

/// One place a call to the service can go.
pub(crate) struct Instance {
    /// `service@node`.
    pub(crate) id: Arc<str>,
    /// `service@node/addr`: one incarnation. Marks and ejections name this, so a node back at
    /// another address starts with a clean record.
    pub(crate) key: Arc<str>,
    pub(crate) node: String,
    pub(crate) addr: SocketAddr,
    pub(crate) version: String,
    /// The version parsed, for range filters; `None` when it is not semver.
    pub(crate) semver: Option<semver::Version>,
    pub(crate) metadata: BTreeMap<String, String>,
    /// Sorted, so a call can check the endpoint exists before sending anything.
    pub(crate) endpoints: Vec<String>,
    /// Set when the instance is this node's own: the call then skips the network.
    pub(crate) local: Option<LocalHandle>,
    id_hash: u64,
    /// Survives table rebuilds for as long as the instance keeps its id and address.
    pub(crate) load: Arc<Load>,
}

impl Instance {
    fn new(ad: &ServiceInstance, local: Option<LocalHandle>, load: Arc<Load>) -> Self {
        let mut endpoints = ad.endpoints.clone();
        endpoints.sort_unstable();
        Self {
            id_hash: stable_hash(ad.id.as_bytes()),
            id: ad.id.as_str().into(),
            key: format!("{}/{}", ad.id, ad.addr).into(),
            semver: semver::Version::parse(&ad.version).ok(),
            node: ad.node.clone(),
            addr: ad.addr,
            version: ad.version.clone(),
            metadata: ad.metadata.clone(),
            endpoints,
            local,
            load,
        }
    }

    pub(crate) fn remote(ad: &ServiceInstance, load: Arc<Load>) -> Self {
        Self::new(ad, None, load)
    }

    /// This node's own instance, described as gossip would describe it.
    pub(crate) fn on_this_node(
        node: &str,
        addr: SocketAddr,
        handle: LocalHandle,
        load: Arc<Load>,
    ) -> Self {
        let (name, service) = &handle;
        let ad = ServiceInstance {
            service: name.to_string(),
            id: format!("{name}@{node}"),
            version: service.version().to_string(),
            node: node.to_string(),
            addr,
            endpoints: service.endpoints().iter().map(|e| e.to_string()).collect(),
            metadata: service.metadata().clone(),
            actors: service.live_instances(),
            subscriptions: Vec::new(),
        };
        Self::new(&ad, Some(handle), load)
    }

    pub(crate) fn has_endpoint(&self, endpoint: &str) -> bool {
        self.endpoints
            .binary_search_by(|e| e.as_str().cmp(endpoint))
            .is_ok()
    }
}

impl Candidate for Instance {
    fn load(&self) -> &Load {
        &self.load
    }
    fn is_local(&self) -> bool {
        self.local.is_some()
    }
    fn id_hash(&self) -> u64 {
        self.id_hash
    }
}

/// The instances of one service, replaced whole on every membership change.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) instances: Vec<Arc<Instance>>,
    /// The gossip view it was built from: a newer one means the table is stale.
    pub(crate) view: Arc<ClusterView>,
}

impl Table {
    pub(crate) fn find(&self, id: &str) -> Option<&Arc<Instance>> {
        self.instances.iter().find(|i| &*i.id == id)
    }

    /// The incarnation named `key`.
    pub(crate) fn incarnation(&self, key: &str) -> Option<&Arc<Instance>> {
        self.instances.iter().find(|i| &*i.key == key)
    }
}

/// One instance as a caller node sees it, for `colony describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// `service@node`.
    pub id: String,
    /// The node serving it.
    pub node: String,
    /// Where it is called.
    pub addr: SocketAddr,
    /// True when it runs on the reporting node itself.
    pub local: bool,
    /// `healthy`, `ejected` or `probing`.
    pub health: String,
    /// Calls from the reporting node in flight now.
    pub outstanding: u32,
    /// Smoothed latency seen by the reporting node, in microseconds (`None`: no call yet).
    pub latency_us: Option<u64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Milliseconds until its ejection ends, while ejected.
    pub ejected_for_ms: Option<u64>,
    /// Times it has been ejected.
    pub ejections: u32,
    /// Calls the reporting node made to it, and how many failed.
    pub calls: u64,
    /// Of those, how many failed.
    pub failures: u64,
}
