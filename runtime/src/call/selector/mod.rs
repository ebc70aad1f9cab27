//! Selectors: one actor per service this node calls, deciding where each call goes.
//!
//! A [`Selector`] publishes a [`Table`] of the service's instances (from the gossip view, plus
//! this node's own instance) that callers read lock-free on every call, with live [`Load`]
//! statistics they update in line. Its actor ([`actor`]) follows membership changes, receives
//! the marks that matter (failures; successes after failures; probes), ejects and restores
//! instances, and answers `colony describe`. The decisions themselves are
//! `colony_actors::selector`'s plain state machines.
//!
//! [`Load`]: colony_actors::selector::Load

mod actor;
mod table;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use colony_actors::ractor::rpc::CallResult;
use colony_actors::ractor::ActorRef;
use colony_actors::selector::{Health, RetryBudget};
use dashmap::DashMap;

use super::defaults::CallDefaults;
use crate::membership::Registry;
use crate::service::LocalServices;
pub(crate) use actor::Mark;
use actor::SelectorMsg;
pub use table::InstanceReport;
pub(crate) use table::{Instance, LocalHandle, Table};

/// Where a node's selectors get their instances from.
pub(crate) struct Sources {
    pub(crate) node: String,
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) registry: Registry,
    pub(crate) services: Arc<LocalServices>,
}

/// The selector of one service.
pub(crate) struct Selector {
    pub(crate) service: Arc<str>,
    sources: Arc<Sources>,
    table: ArcSwap<Table>,
    pub(crate) round_robin: AtomicUsize,
    /// Instances probing after an ejection; callers look for a probe to send only while > 0.
    probing: AtomicUsize,
    pub(crate) budget: RetryBudget,
    actor: OnceLock<ActorRef<SelectorMsg>>,
    /// Rebuilds come from the actor (membership) and from this node's services starting and
    /// stopping; one at a time, so an older picture never replaces a newer one.
    rebuilding: Mutex<()>,
}

impl Selector {
    /// The current table: never older than the registry view this node's callers can see,
    /// so a call right after the registry shows an instance can use it.
    pub(crate) fn table(&self) -> arc_swap::Guard<Arc<Table>> {
        let table = self.table.load();
        if self.sources.registry.is_current(&table.view) {
            return table;
        }
        self.rebuild(false);
        self.table.load()
    }

    pub(crate) fn any_probing(&self) -> bool {
        self.probing.load(Ordering::Relaxed) > 0
    }

    /// Tells the actor something it must know; dropped if the actor has stopped.
    pub(crate) fn mark(&self, mark: Mark) {
        if let Some(actor) = self.actor.get() {
            let _ = actor.cast(SelectorMsg::Mark(mark));
        }
    }

    /// Rebuilds the table from the gossip view and this node's services, keeping each
    /// surviving instance's statistics. Unless `force`d (this node's services changed), a
    /// table already built from the current view is kept.
    fn rebuild(&self, force: bool) {
        let sources = &self.sources;
        let _one_at_a_time = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.table.load_full();
        let view = sources.registry.current();
        if !force && Arc::ptr_eq(&old.view, &view) {
            return;
        }
        let reuse = |id: &str, addr| {
            old.find(id)
                .filter(|i| i.addr == addr)
                .map(|i| i.load.clone())
                .unwrap_or_default()
        };
        let mut instances: Vec<Arc<Instance>> = view
            .by_service
            .get(&*self.service)
            .into_iter()
            .flatten()
            .filter(|i| i.node != sources.node)
            .map(|i| Arc::new(Instance::remote(i, reuse(&i.id, i.addr))))
            .collect();
        if let Some(handle) = sources.services.get(&self.service) {
            let id = format!("{}@{}", self.service, sources.node);
            let load = reuse(&id, sources.addr);
            instances.push(Arc::new(Instance::on_this_node(
                &sources.node,
                sources.addr,
                handle,
                load,
            )));
        }
        let table = Arc::new(Table { instances, view });
        self.recount_probing(&table);
        self.table.store(table);
    }

    fn recount_probing(&self, table: &Table) {
        let probing = table
            .instances
            .iter()
            .filter(|i| i.load.health() == Health::Probing)
            .count();
        self.probing.store(probing, Ordering::Relaxed);
    }
}

/// Every selector of a node, created on the first call to each service.
pub(crate) struct Selectors {
    by_service: DashMap<Arc<str>, Arc<Selector>>,
    /// Set by [`stop_all`](Self::stop_all): no selector starts after the node stopped.
    stopped: std::sync::atomic::AtomicBool,
    sources: Arc<Sources>,
    defaults: CallDefaults,
}

impl Selectors {
    pub(crate) fn new(sources: Sources, defaults: CallDefaults) -> Self {
        Self {
            by_service: DashMap::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
            sources: Arc::new(sources),
            defaults,
        }
    }

    /// The selector of `service`, started on first use; `None` while no instance of it is
    /// known anywhere (so a mistyped name starts nothing).
    pub(crate) fn get(&self, service: &str) -> Option<Arc<Selector>> {
        if let Some(found) = self.by_service.get(service) {
            return Some(found.clone());
        }
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let known = self.sources.services.get(service).is_some()
            || !self.sources.registry.instances(service).is_empty();
        if !known {
            return None;
        }
        let selector = match self.by_service.entry(service.into()) {
            dashmap::mapref::entry::Entry::Occupied(e) => return Some(e.get().clone()),
            dashmap::mapref::entry::Entry::Vacant(e) => {
                let selector = Arc::new(Selector {
                    service: e.key().clone(),
                    sources: self.sources.clone(),
                    table: ArcSwap::from_pointee(Table::default()),
                    round_robin: AtomicUsize::new(0),
                    probing: AtomicUsize::new(0),
                    budget: RetryBudget::new(self.defaults.retry_budget, Instant::now()),
                    actor: OnceLock::new(),
                    rebuilding: Mutex::new(()),
                });
                selector.rebuild(true);
                e.insert(selector.clone());
                selector
            }
        };
        actor::start(&selector, self.defaults.outliers);
        Some(selector)
    }

    /// This node started or stopped `service`: its selector, if any, sees it before the call
    /// that follows (gossip would take a round).
    pub(crate) fn local_changed(&self, service: &str) {
        if let Some(selector) = self.by_service.get(service).map(|s| s.clone()) {
            selector.rebuild(true);
        }
    }

    /// The gossip view changed: every selector's actor rebuilds its table.
    pub(crate) fn view_changed(&self) {
        for entry in &self.by_service {
            if let Some(actor) = entry.value().actor.get() {
                let _ = actor.cast(SelectorMsg::Refresh);
            }
        }
    }

    /// What this node's selector knows of each instance of `service` (empty if this node has
    /// not called it).
    pub(crate) async fn report(&self, service: &str) -> Vec<InstanceReport> {
        let Some(actor) = self
            .by_service
            .get(service)
            .and_then(|s| s.actor.get().cloned())
        else {
            return Vec::new();
        };
        match actor
            .call(SelectorMsg::Report, Some(std::time::Duration::from_secs(5)))
            .await
        {
            Ok(CallResult::Success(report)) => report,
            _ => Vec::new(),
        }
    }

    /// Stops every selector actor (node shutdown).
    pub(crate) fn stop_all(&self) {
        self.stopped.store(true, Ordering::Release);
        for entry in &self.by_service {
            if let Some(actor) = entry.value().actor.get() {
                actor.stop(None);
            }
        }
        self.by_service.clear();
    }
}
