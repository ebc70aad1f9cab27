//! Services: typed endpoints served by supervised instance actors.

mod builder;
mod endpoints;
mod host;
mod instance;
mod layered;
mod local;

use std::sync::{Arc, Weak};
use std::time::Duration;

use colony_actors::ractor::rpc::CallResult;
use colony_actors::SupervisorMsg;

use crate::error::{Code, Error};
use crate::membership::ServiceAd;

pub use builder::ServiceBuilder;
pub(crate) use builder::RESERVED_PREFIX;
pub(crate) use endpoints::AnyBox;
pub(crate) use local::{
    await_reply, call_encoded, deliver, downcast_reply, LocalService, LocalServices, Pending,
};

pub(crate) use host::Host;

/// How long stopping a service waits for its instances to finish the message at hand.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long scaling waits for the new instances to start.
const SCALE_WAIT: Duration = Duration::from_secs(30);

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

    /// Instance restarts since the service started.
    pub fn restarts(&self) -> u64 {
        self.running().map_or(0, |s| s.restarts())
    }

    /// Runs `instances` instances (at least one) from now on, while the service serves: new
    /// instances start from the factory; removed ones take no new call, finish the calls
    /// already in their mailboxes, then stop, so scaling fails no call. The advertised actor
    /// count follows.
    pub async fn scale(&self, instances: usize) -> Result<(), Error> {
        let stopped =
            || Error::client(Code::NotFound, format!("service {} has stopped", self.name));
        let host = self.host.upgrade().ok_or_else(stopped)?;
        let service = host
            .services()
            .get(&self.name)
            .map(|(_, s)| s)
            .ok_or_else(stopped)?;
        let count = instances.max(1);
        let done = service
            .supervisor()
            .call(|reply| SupervisorMsg::Scale(count, reply), Some(SCALE_WAIT))
            .await;
        if !matches!(done, Ok(CallResult::Success(()))) {
            return Err(Error::client(
                Code::Unavailable,
                format!("service {} did not scale to {count}", self.name),
            ));
        }
        let ad = ServiceAd {
            version: service.version().to_string(),
            endpoints: service.endpoints().iter().map(|e| e.to_string()).collect(),
            metadata: service.metadata().clone(),
            actors: count,
        };
        host.membership().publish(&self.name, &ad).await;
        Ok(())
    }

    /// Stops the service: it stops taking calls, and its instances finish their current message.
    pub async fn stop(&self) {
        let Some(shared) = self.host.upgrade() else {
            return;
        };
        // Withdrawn from the cluster first, so peers stop routing here before calls fail.
        shared.membership().withdraw(&self.name).await;
        if let Some(service) = shared.services().remove(&self.name) {
            shared.local_changed(&self.name);
            stop_service(service.as_ref()).await;
        }
    }
}

pub(crate) async fn stop_service(service: &dyn LocalService) {
    let _ = service
        .supervisor()
        .stop_and_wait(Some("service stopped".into()), Some(STOP_GRACE))
        .await;
}
