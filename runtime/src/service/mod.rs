//! Services: typed endpoints served by supervised instance actors.

mod builder;
mod endpoints;
mod health;
mod host;
mod instance;
mod layered;
mod lifecycle;
mod local;
pub(crate) mod node_supervisor;
mod recovery;
mod roster;
mod subscribing;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use colony_actors::ractor::rpc::CallResult;
use colony_actors::SupervisorMsg;

use crate::error::{Code, Error};

pub use builder::ServiceBuilder;
pub(crate) use builder::RESERVED_PREFIX;
pub(crate) use endpoints::AnyBox;
pub use health::{BrokerHealth, NodeHealth, NodeStatus, ServiceHealth, ServiceStatus};
pub use lifecycle::Lifecycle;
pub(crate) use local::{
    await_reply, call_encoded, deliver, downcast_reply, LocalService, LocalServices, Pending,
};
pub use recovery::Recovery;
pub(crate) use roster::Roster;
pub use subscribing::Subscribing;

pub(crate) use host::Host;

/// How long stopping a service waits for its instances to answer the calls in their mailboxes.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long scaling waits for the new instances to start: their `started` hooks run one after
/// another, each within its start timeout (30 s by default).
const SCALE_WAIT: Duration = Duration::from_secs(300);

/// A handle on a running service.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    name: Arc<str>,
    host: Weak<dyn Host>,
}

impl ServiceRef {
    fn running(&self) -> Option<Arc<dyn LocalService>> {
        self.host
            .upgrade()?
            .services()
            .get(&self.name)
            .map(|(_, s)| s)
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The advertised version; `None` once the service has stopped.
    pub fn version(&self) -> Option<String> {
        self.running().map(|s| s.version().to_string())
    }

    /// The endpoints the service answers (empty once stopped).
    pub fn endpoints(&self) -> Vec<&'static str> {
        self.running().map_or_else(Vec::new, |s| s.endpoints())
    }

    /// Instances running now (fewer than asked for while one restarts; 0 once stopped).
    pub fn live_instances(&self) -> usize {
        self.running().map_or(0, |s| s.live_instances())
    }

    /// Instance restarts of the incarnation running now (a restart of the whole service after
    /// a failure starts again from 0; [`health`](Self::health) counts them all).
    pub fn restarts(&self) -> u64 {
        self.running().map_or(0, |s| s.restarts())
    }

    /// The service's health on this node: running, degraded, restarting or failed, with its
    /// live instances, restarts and last failure. `None` once stopped.
    pub fn health(&self) -> Option<ServiceHealth> {
        let host = self.host.upgrade()?;
        let entry = host.roster().get(&self.name)?;
        Some(entry.health(self.running().as_deref()))
    }

    /// Runs `instances` instances (at least one) from now on, while the service serves: new
    /// instances start from the factory; removed ones take no new call, finish the calls
    /// already in their mailboxes, then stop, so scaling fails no call. The advertised actor
    /// count follows, and a restart after a failure starts this many.
    pub async fn scale(&self, instances: usize) -> Result<(), Error> {
        let stopped = || {
            Error::client(
                Code::NotFound,
                format!("service {} is not running", self.name),
            )
        };
        let host = self.host.upgrade().ok_or_else(stopped)?;
        let service = self.running().ok_or_else(stopped)?;
        let count = instances.max(1);
        // Recorded first: however long the new instances take to start, a restart of the whole
        // service after a failure starts this many, and health counts against it.
        if let Some(entry) = host.roster().get(&self.name) {
            entry.instances.store(count, Ordering::Relaxed);
        }
        let done = service
            .supervisor()
            .call(|reply| SupervisorMsg::Scale(count, reply), Some(SCALE_WAIT))
            .await;
        if !matches!(done, Ok(CallResult::Success(true))) {
            return Err(Error::client(
                Code::Unavailable,
                format!("service {} did not scale to {count}", self.name),
            ));
        }
        advertise(host.as_ref(), &self.name, &service).await;
        Ok(())
    }

    /// Starts a failed service again now, without waiting for its cool-down. `Conflict` if it
    /// is not failed; a start that fails is returned (and counts as one more failure).
    pub async fn restart(&self) -> Result<(), Error> {
        let gone = || Error::client(Code::NotFound, format!("service {} has stopped", self.name));
        let host = self.host.upgrade().ok_or_else(gone)?;
        let entry = host.roster().get(&self.name).ok_or_else(gone)?;
        let supervisor = host.node_supervisor().ok_or_else(gone)?;
        if host.is_closing() {
            return Err(Error::unavailable("node is shutting down"));
        }
        if !entry.claim_restart(None) {
            return Err(Error::client(
                Code::Conflict,
                format!("service {} is not failed", self.name),
            ));
        }
        node_supervisor::restart(&supervisor, &host, &entry).await
    }

    /// Stops the service gracefully: withdrawn from the cluster first (peers stop routing
    /// here), then out of this node's table, then each instance answers the calls already in
    /// its mailbox, runs its `stopping` hook and stops.
    pub async fn stop(&self) {
        let Some(shared) = self.host.upgrade() else {
            return;
        };
        shared.membership().withdraw(&self.name).await;
        shared.roster().remove(&self.name);
        if let Some(service) = shared.services().remove(&self.name) {
            shared.local_changed(&self.name);
            stop_service(service.as_ref(), STOP_GRACE).await;
        }
    }
}

/// Advertises `service` in gossip while it is still the incarnation serving `name`: one that
/// failed or was stopped meanwhile must not come back into gossip (and if that happens during
/// the publish, the advert is taken back).
pub(crate) async fn advertise(host: &dyn Host, name: &str, service: &Arc<dyn LocalService>) {
    let serving = || host.services().is_serving(name, service);
    if serving() {
        host.membership().publish(name, &service.ad()).await;
        if !serving() {
            host.membership().withdraw(name).await;
        }
    }
}

/// Drains the service (every queued call answered, `stopping` hooks run) within `grace`, then
/// stops what is left.
pub(crate) async fn stop_service(service: &dyn LocalService, grace: Duration) {
    let supervisor = service.supervisor();
    let drained =
        supervisor.cast(SupervisorMsg::Drain).is_ok() && supervisor.wait(Some(grace)).await.is_ok();
    if !drained {
        tracing::warn!(?grace, "service did not drain in time; stopping it");
        let stopped = supervisor
            .stop_and_wait(Some("drain timed out".into()), Some(STOP_GRACE))
            .await;
        if stopped.is_err() {
            // Stuck in a handler (a `started` hook, say): nothing else will end it.
            supervisor.kill();
        }
    }
}
