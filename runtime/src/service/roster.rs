//! Every service declared on this node, running or failed, with how to start it again.
//!
//! [`LocalServices`](super::LocalServices) holds what is routable now; the roster outlives a
//! failure, so a failed service still shows in health and the node-level supervisor can start
//! it again after its cool-down. It also keeps the start order, which shutdown reverses.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use colony_actors::ractor::{ActorCell, ActorRef};
use colony_actors::Failure;
use dashmap::DashMap;

use super::health::{ServiceHealth, ServiceStatus};
use super::local::LocalService;
use super::node_supervisor::NodeSupervisorMsg;
use super::recovery::Recovery;
use super::Host;
use crate::error::Error;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Starts one incarnation of a service: this many instances, under this supervisor.
pub(crate) type Launch = Arc<
    dyn Fn(usize, Option<ActorCell>) -> BoxFuture<Result<Arc<dyn LocalService>, Error>>
        + Send
        + Sync,
>;

/// One declared service.
pub(crate) struct Entry {
    pub(crate) name: Arc<str>,
    order: u64,
    launch: Launch,
    pub(crate) recovery: Recovery,
    advertise: bool,
    /// Instances asked for; follows `ServiceRef::scale`, and a restart after a failure starts
    /// this many.
    pub(crate) instances: AtomicUsize,
    record: Mutex<Record>,
}

/// What health reports beyond the running incarnation.
struct Record {
    /// Failed and withdrawn; `Some(at)`: the node restarts it then.
    failed: Option<Option<Instant>>,
    escalations: u32,
    /// Failures past the budget in a row.
    streak: u32,
    /// Instance restarts of incarnations that ended.
    restarts_before: u64,
    last_failure: Option<Failure>,
    started_at: Instant,
}

impl Entry {
    pub(crate) fn new(
        name: Arc<str>,
        launch: Launch,
        recovery: Recovery,
        advertise: bool,
        instances: usize,
    ) -> Self {
        Self {
            name,
            order: 0,
            launch,
            recovery,
            advertise,
            instances: AtomicUsize::new(instances),
            record: Mutex::new(Record {
                failed: None,
                escalations: 0,
                streak: 0,
                restarts_before: 0,
                last_failure: None,
                started_at: Instant::now(),
            }),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an incarnation and makes it callable: in the node's table, then in gossip (only
    /// once it can answer, so no peer routes here too early), then adopted by the node-level
    /// supervisor, which learns if it fails.
    pub(crate) async fn start(&self, host: &Arc<dyn Host>) -> Result<(), Error> {
        let instances = self.instances.load(Ordering::Relaxed);
        let parent = host.node_supervisor();
        let service = (self.launch)(instances, parent.as_ref().map(|p| p.get_cell())).await?;
        let adopt = |parent: Option<ActorRef<NodeSupervisorMsg>>| {
            if let Some(parent) = parent {
                let id = service.supervisor().get_id();
                let _ = parent.cast(NodeSupervisorMsg::Adopt(self.name.clone(), id));
            }
        };
        if let Err(e) = host.services().insert(self.name.clone(), service.clone()) {
            // Name taken: the instances just started go away again (adopted all the same, so
            // the node-level supervisor forgets their supervisor's exit).
            adopt(parent);
            service.supervisor().stop(None);
            return Err(e);
        }
        self.record().started_at = Instant::now();
        host.local_changed(&self.name);
        if self.advertise {
            host.membership().publish(&self.name, &service.ad()).await;
        }
        adopt(parent);
        Ok(())
    }

    /// The service failed past its budget (its incarnation is gone, with `restarts` instance
    /// restarts): mark it failed and say how long until it restarts, if it does.
    pub(crate) fn failed(&self, reason: &str, restarts: u64) -> Option<Duration> {
        let mut record = self.record();
        let now = Instant::now();
        if now.duration_since(record.started_at) > self.recovery.settled_after() {
            record.streak = 0;
        }
        record.streak += 1;
        record.escalations += 1;
        record.restarts_before += restarts;
        record.last_failure = Some(Failure {
            reason: reason.to_string(),
            at: SystemTime::now(),
        });
        let wait = self.recovery.cool_down(record.streak);
        record.failed = Some(wait.map(|w| now + w));
        wait
    }

    /// Claims a failed service for a restart; false if it is not failed (running, or already
    /// being restarted by the cool-down or by hand).
    pub(crate) fn claim_restart(&self) -> bool {
        self.record().failed.take().is_some()
    }

    /// Health from the record and, when it runs, the live incarnation.
    pub(crate) fn health(&self, running: Option<&dyn LocalService>) -> ServiceHealth {
        let record = self.record();
        let asked = self.instances.load(Ordering::Relaxed);
        let queued = running.map_or(0, |s| s.queued());
        let (status, live, restarts, last_failure) = match (running, &record.failed) {
            (Some(service), None) => {
                let live = service.live_instances();
                let status = match live {
                    0 => ServiceStatus::Restarting,
                    n if n < service.slots() => ServiceStatus::Degraded,
                    _ => ServiceStatus::Running,
                };
                let latest = [service.last_failure(), record.last_failure.clone()]
                    .into_iter()
                    .flatten()
                    .max_by_key(|f| f.at);
                (status, live, service.restarts(), latest)
            }
            _ => (ServiceStatus::Failed, 0, 0, record.last_failure.clone()),
        };
        let restart_in_ms = match record.failed {
            Some(Some(at)) => Some(at.saturating_duration_since(Instant::now()).as_millis() as u64),
            _ => None,
        };
        ServiceHealth {
            name: self.name.to_string(),
            status,
            instances: asked,
            live,
            queued,
            restarts: record.restarts_before + restarts,
            escalations: record.escalations,
            last_failure_ms_ago: last_failure.as_ref().map(|f| {
                SystemTime::now()
                    .duration_since(f.at)
                    .unwrap_or_default()
                    .as_millis() as u64
            }),
            last_failure: last_failure.map(|f| f.reason),
            restart_in_ms,
        }
    }
}

/// The declared services of a node.
#[derive(Default)]
pub(crate) struct Roster {
    entries: DashMap<Arc<str>, Arc<Entry>>,
    next_order: AtomicU64,
}

impl Roster {
    /// Declares `entry`, replacing a failed declaration of the same name.
    pub(crate) fn insert(&self, mut entry: Entry) -> Arc<Entry> {
        entry.order = self.next_order.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(entry);
        self.entries.insert(entry.name.clone(), entry.clone());
        entry
    }

    /// Puts back a declaration that a refused spawn of the same name displaced.
    pub(crate) fn restore(&self, entry: Arc<Entry>) {
        self.entries.insert(entry.name.clone(), entry);
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries.get(name).map(|e| e.value().clone())
    }

    /// True if `entry` is still the declaration of its name (not stopped, not replaced).
    pub(crate) fn is_current(&self, entry: &Arc<Entry>) -> bool {
        self.get(&entry.name)
            .is_some_and(|e| Arc::ptr_eq(&e, entry))
    }

    pub(crate) fn remove(&self, name: &str) {
        self.entries.remove(name);
    }

    /// Removes `entry` only if it is still the declaration of its name.
    pub(crate) fn remove_if_same(&self, entry: &Arc<Entry>) {
        self.entries
            .remove_if(&entry.name, |_, e| Arc::ptr_eq(e, entry));
    }

    /// Every declared service, first started first.
    pub(crate) fn in_start_order(&self) -> Vec<Arc<Entry>> {
        let mut entries: Vec<_> = self.entries.iter().map(|e| e.value().clone()).collect();
        entries.sort_by_key(|e| e.order);
        entries
    }
}
