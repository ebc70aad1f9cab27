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

use colony_actors::ractor::{ActorCell, ActorId};
use colony_actors::{Failure, GaveUp};
use dashmap::DashMap;

use super::health::{ServiceHealth, ServiceStatus};
use super::local::LocalService;
use super::node_supervisor::NodeSupervisorMsg;
use super::recovery::Recovery;
use super::Host;
use crate::error::{Code, Error};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Starts one incarnation of a service: this many instances, under this supervisor, telling
/// `gave_up` the moment its restart budget runs out.
pub(crate) type Launch = Arc<
    dyn Fn(
            usize,
            Option<ActorCell>,
            Option<GaveUp>,
        ) -> BoxFuture<Result<Arc<dyn LocalService>, Error>>
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

/// Where a declared service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its instances are starting (`started` hooks running): at spawn, and on a restart.
    Starting,
    /// An incarnation runs (its instances may be restarting: see its `Instances`).
    Running,
    /// Failed past its budget and withdrawn; the node restarts it at `restart_at`, if set.
    Failed { restart_at: Option<Instant> },
    /// Being stopped on purpose: its instances answer what they hold, then stop.
    Stopping,
}

/// What health reports beyond the running incarnation.
struct Record {
    phase: Phase,
    /// Escalations so far: a cool-down timer restarts the service only if no other failure
    /// (or restart) came since it was set.
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
                phase: Phase::Starting,
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

    /// Starts an incarnation and makes it callable: in the node's table, adopted by the
    /// node-level supervisor (which learns if it fails), then in gossip (only once it can
    /// answer, so no peer routes here too early). Refused if the node is shutting down or the
    /// declaration was stopped or replaced meanwhile (the new instances go away again).
    pub(crate) async fn start(self: &Arc<Self>, host: &Arc<dyn Host>) -> Result<(), Error> {
        let instances = self.instances.load(Ordering::Relaxed);
        let root = host.node_supervisor();
        let gave_up: Option<GaveUp> = root.clone().map(|root| {
            let entry = self.clone();
            Arc::new(move |supervisor: ActorId, reason: &str| {
                let msg = NodeSupervisorMsg::GaveUp(entry.clone(), supervisor, reason.to_string());
                let _ = root.cast(msg);
            }) as GaveUp
        });
        let cell = root.as_ref().map(|r| r.get_cell());
        let service = (self.launch)(instances, cell, gave_up).await?;
        if let Some(root) = &root {
            // Adopted whatever follows, so the root never waits for this supervisor's exit.
            let id = service.supervisor().get_id();
            let _ = root.cast(NodeSupervisorMsg::Adopt(self.clone(), id));
        }
        let refused = if host.is_closing() {
            Some(Error::unavailable("node is shutting down"))
        } else if !host.roster().is_current(self) {
            Some(Error::client(
                Code::Conflict,
                format!("service {} was stopped or declared again", self.name),
            ))
        } else {
            host.services()
                .insert(self.name.clone(), service.clone())
                .err()
        };
        if let Some(e) = refused {
            service.supervisor().stop(None);
            return Err(e);
        }
        if !host.roster().is_current(self) {
            // Stopped between the check and the insert: undo.
            host.services().remove_if_same(&self.name, &service);
            service.supervisor().stop(None);
            return Err(Error::client(
                Code::Conflict,
                format!("service {} was stopped or declared again", self.name),
            ));
        }
        // This node's callers see it before health calls it running.
        host.local_changed(&self.name);
        {
            // Only if nothing happened to it meanwhile: its first call may already have failed
            // it past its budget, and that failure must stand.
            let mut record = self.record();
            if record.phase == Phase::Starting && host.services().is_serving(&self.name, &service) {
                record.phase = Phase::Running;
                record.started_at = Instant::now();
            }
        }
        if self.advertise {
            super::advertise(host.as_ref(), &self.name, &service).await;
        }
        Ok(())
    }

    /// A claimed restart that was refused (the node is shutting down, or a newer declaration
    /// took its name): failed again, with no restart scheduled, rather than starting forever.
    pub(crate) fn restart_refused(&self) {
        let mut record = self.record();
        if record.phase == Phase::Starting {
            record.phase = Phase::Failed { restart_at: None };
        }
    }

    /// The service is being stopped on purpose (node shutdown): health says so, not failed.
    pub(crate) fn stopping(&self) {
        self.record().phase = Phase::Stopping;
    }

    /// The service failed past its budget (`ran`: its incarnation had been serving, with
    /// `restarts` instance restarts; else a restart of it failed to start): mark it failed and
    /// say how long until it restarts, if it does, and which failure that wait is for.
    pub(crate) fn failed(
        &self,
        reason: &str,
        restarts: u64,
        ran: bool,
        closing: bool,
    ) -> (Option<Duration>, u32) {
        let mut record = self.record();
        let now = Instant::now();
        // A service that served long enough starts a new streak; a failed start never does.
        if ran && now.duration_since(record.started_at) > self.recovery.settled_after() {
            record.streak = 0;
        }
        record.streak += 1;
        record.escalations += 1;
        record.restarts_before += restarts;
        record.last_failure = Some(Failure {
            reason: reason.to_string(),
            at: SystemTime::now(),
        });
        // No restart while the node shuts down: health must not count down to one.
        let wait = self.recovery.cool_down(record.streak).filter(|_| !closing);
        record.phase = Phase::Failed {
            restart_at: wait.map(|w| now + w),
        };
        (wait, record.escalations)
    }

    /// For a failed service whose node restarts it: how long until then, and the escalation
    /// its timer is for (to schedule the timer again when a declaration is put back).
    pub(crate) fn pending_restart(&self) -> Option<(Duration, u32)> {
        let record = self.record();
        match record.phase {
            Phase::Failed {
                restart_at: Some(at),
            } => Some((
                at.saturating_duration_since(Instant::now()),
                record.escalations,
            )),
            _ => None,
        }
    }

    /// Claims a failed service for a restart: by the cool-down timer set for failure number
    /// `escalation` (stale if another failure came since), or by hand (`None`). False if it is
    /// not failed (running, starting, or already claimed).
    pub(crate) fn claim_restart(&self, escalation: Option<u32>) -> bool {
        let mut record = self.record();
        let current = escalation.is_none_or(|n| n == record.escalations);
        if !matches!(record.phase, Phase::Failed { .. }) || !current {
            return false;
        }
        record.phase = Phase::Starting;
        true
    }

    /// Health from the record and, when it runs, the live incarnation.
    pub(crate) fn health(&self, running: Option<&dyn LocalService>) -> ServiceHealth {
        let record = self.record();
        let asked = self.instances.load(Ordering::Relaxed);
        let queued = running.map_or(0, |s| s.queued());
        let (status, live, restarts, last_failure) = match (running, record.phase) {
            (Some(service), Phase::Running) => {
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
            (_, Phase::Starting) => (ServiceStatus::Starting, 0, 0, record.last_failure.clone()),
            (running, Phase::Stopping) => (
                ServiceStatus::Stopping,
                running.map_or(0, |s| s.live_instances()),
                running.map_or(0, |s| s.restarts()),
                record.last_failure.clone(),
            ),
            _ => (ServiceStatus::Failed, 0, 0, record.last_failure.clone()),
        };
        let restart_in_ms = match record.phase {
            Phase::Failed {
                restart_at: Some(at),
            } => Some(at.saturating_duration_since(Instant::now()).as_millis() as u64),
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
            subscriptions: running.map_or_else(Vec::new, |s| {
                s.subscriptions().iter().map(|sub| sub.stats()).collect()
            }),
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
    /// Returns whether it was put back: only in place of `failed`, the declaration that
    /// displaced it (not over a third one made meanwhile).
    pub(crate) fn restore(&self, entry: Arc<Entry>, failed: &Arc<Entry>) -> bool {
        use dashmap::mapref::entry::Entry as Slot;
        match self.entries.entry(entry.name.clone()) {
            Slot::Occupied(mut current) if Arc::ptr_eq(current.get(), failed) => {
                current.insert(entry);
                true
            }
            _ => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(recovery: Recovery) -> Entry {
        let launch: Launch = Arc::new(|_, _, _| Box::pin(async { Err(Error::internal("unused")) }));
        Entry::new("svc".into(), launch, recovery, false, 1)
    }

    #[test]
    fn only_the_timer_of_the_latest_failure_restarts_and_by_hand_always_may() {
        let e = entry(Recovery::CoolDown {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
        });
        assert!(!e.claim_restart(None), "not failed: nothing to restart");
        let (wait, first) = e.failed("boom", 0, true, false);
        assert_eq!(wait, Some(Duration::from_secs(1)));
        assert!(e.claim_restart(None), "by hand");
        assert!(!e.claim_restart(Some(first)), "already claimed");
        // It failed again (its restart did not start): the first timer is now stale.
        let (wait, second) = e.failed("start failed", 0, false, false);
        assert_eq!(
            wait,
            Some(Duration::from_secs(2)),
            "a failed start keeps doubling"
        );
        assert!(!e.claim_restart(Some(first)), "a stale timer");
        assert!(e.claim_restart(Some(second)));
        assert_eq!(e.health(None).status, ServiceStatus::Starting);
    }
}
