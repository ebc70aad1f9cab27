//! The registry view go-micro's `Registry` gave, answered from gossip: list, get and watch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::view::{diff, ClusterView, Member, RegistryEvent, ServiceInstance, SharedView};

/// This node's view of the cluster's services and members. Cheap to clone.
///
/// The view is eventually consistent: a change anywhere reaches every node within a few gossip
/// intervals.
#[derive(Clone)]
pub struct Registry {
    view: watch::Receiver<SharedView>,
    /// The generation of the newest view, published before the view itself.
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view.borrow();
        f.debug_struct("Registry")
            .field("members", &view.members.len())
            .field("instances", &view.instances.len())
            .finish()
    }
}

impl Registry {
    pub(crate) fn new(view: watch::Receiver<SharedView>, generation: Arc<AtomicU64>) -> Self {
        Self { view, generation }
    }

    /// Names of all services offered somewhere in the cluster, sorted.
    pub fn services(&self) -> Vec<String> {
        let view = self.view.borrow();
        let mut names: Vec<String> = view.by_service.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every instance of `service`, in node-name order.
    pub fn instances(&self, service: &str) -> Vec<ServiceInstance> {
        self.view
            .borrow()
            .by_service
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Every subscription in the cluster, this node's and client nodes' (`colony subscribe`)
    /// included, in node order: what publishers route by. A node's subscriptions appear here
    /// once gossip has carried them.
    pub fn subscriptions(&self) -> Vec<crate::broker::Subscription> {
        self.view.borrow().subscriptions.list()
    }

    /// Live members, in name order (this node included).
    pub fn members(&self) -> Vec<Member> {
        self.view.borrow().members.clone()
    }

    /// The view now.
    pub(crate) fn current(&self) -> SharedView {
        self.view.borrow().clone()
    }

    /// Whether `view` is still the newest one: one atomic load, for the call path.
    pub(crate) fn is_current(&self, view: &ClusterView) -> bool {
        view.generation == self.generation.load(Ordering::Acquire)
    }

    /// A receiver that wakes on every change of the view.
    pub(crate) fn view(&self) -> watch::Receiver<SharedView> {
        self.view.clone()
    }

    /// Watches instances: [`Watch::snapshot`] is the state now, then [`Watch::next`] yields every
    /// change after it.
    pub fn watch(&self) -> Watch {
        let mut view = self.view.clone();
        let seen = view.borrow_and_update().clone();
        Watch {
            view,
            seen,
            pending: VecDeque::new(),
        }
    }

    /// Waits until `ready` holds for the registry, or `timeout` passes; returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&Registry) -> bool,
    ) -> bool {
        let mut view = self.view.clone();
        let wait = async {
            loop {
                if ready(self) {
                    return;
                }
                if view.changed().await.is_err() {
                    // Membership stopped: nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// A stream of registry changes for one consumer.
///
/// No change is ever lost. A consumer that falls behind does not overflow a buffer (go-micro's
/// mdns watcher drops events past 32): each consumer keeps the last state it has seen and, when
/// it asks for more, gets the difference to the current state. Changes that cancel out while it
/// was away (an instance that came and went) are coalesced away; the consumer's picture is
/// always correct once it has drained the events.
pub struct Watch {
    view: watch::Receiver<SharedView>,
    seen: Arc<ClusterView>,
    pending: VecDeque<RegistryEvent>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// The instances as this consumer last saw them: right after [`Registry::watch`], the
    /// initial snapshot; after events, the state those events led to.
    pub fn snapshot(&self) -> Vec<ServiceInstance> {
        self.seen.instances.values().cloned().collect()
    }

    /// The next change; `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<RegistryEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            self.view.changed().await.ok()?;
            let now = self.view.borrow_and_update().clone();
            self.pending.extend(diff(&self.seen, &now));
            self.seen = now;
        }
    }
}
