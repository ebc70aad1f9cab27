//! `node.service("name")...spawn(factory)`: declaring and starting a service.

use std::collections::BTreeMap;
use std::sync::Arc;

use colony_actors::{supervise, RestartPolicy, ServiceSpec, DEFAULT_MAILBOX};

use super::endpoints::Endpoints;
use super::instance::ServiceState;
use super::local::{LocalService, RunningService};
use super::Host;
use super::ServiceRef;
use crate::error::{Code, Error};
use crate::membership::ServiceAd;
use crate::message::{Handler, Message};

/// Declares a service: its version, instance count, restart policy and endpoints.
///
/// The state type `S` is usually inferred from [`spawn`](Self::spawn); name it with
/// `node.service::<Greeter>("greeter")` when the builder is split across statements.
#[must_use = "a service starts only when spawned"]
pub struct ServiceBuilder<S> {
    host: Arc<dyn Host>,
    name: String,
    version: String,
    instances: usize,
    policy: RestartPolicy,
    metadata: BTreeMap<String, String>,
    mailbox: usize,
    endpoints: Endpoints<S>,
    /// False for colony's own per-node services, which are called by address only.
    advertise: bool,
}

/// Service names colony keeps for itself.
pub(crate) const RESERVED_PREFIX: &str = "colony.";

impl<S: Send + 'static> ServiceBuilder<S> {
    pub(crate) fn new(host: Arc<dyn Host>, name: String) -> Self {
        Self {
            host,
            name,
            version: "0.0.0".into(),
            instances: 1,
            policy: RestartPolicy::default(),
            metadata: BTreeMap::new(),
            mailbox: DEFAULT_MAILBOX,
            endpoints: Endpoints::default(),
            advertise: true,
        }
    }

    /// A service of colony's own: not advertised in gossip, allowed a reserved name.
    pub(crate) fn unadvertised(mut self) -> Self {
        self.advertise = false;
        self
    }

    /// The version advertised for this service (default `0.0.0`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// How many instances (actors) to run; each call goes to the one with the fewest messages
    /// waiting. Default 1.
    pub fn instances(mut self, count: usize) -> Self {
        self.instances = count;
        self
    }

    /// How failed instances are restarted. Default: one-for-one, at most 10 in 60 s.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// How many calls each instance may have waiting (default 1024). When every instance is
    /// full, a call is refused at once with `Unavailable` from the server, which a caller by
    /// name retries on another node: backpressure instead of an unbounded queue.
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Adds metadata advertised with the service in the registry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Answers `M` at `M::ENDPOINT` with `S`'s [`Handler<M>`].
    pub fn handler<M: Message>(mut self) -> Self
    where
        S: Handler<M>,
    {
        self.endpoints.add::<M>();
        self
    }

    /// Starts the instances, each with state from `factory`, and makes the service callable.
    ///
    /// `factory` runs again for every restart, so a restarted instance starts clean.
    pub async fn spawn<F>(self, factory: F) -> Result<ServiceRef, Error>
    where
        F: Fn() -> S + Send + Sync + 'static,
    {
        let refuse = |detail: String| Err(Error::client(Code::BadRequest, detail));
        if self.instances == 0 {
            return refuse(format!("service {} needs at least one instance", self.name));
        }
        if self.endpoints.names().is_empty() {
            return refuse(format!("service {} has no handlers", self.name));
        }
        if self.name.starts_with(RESERVED_PREFIX) && self.advertise {
            return refuse(format!(
                "service names starting with {RESERVED_PREFIX:?} are colony's own: {}",
                self.name
            ));
        }
        if self.host.is_closing() {
            return Err(Error::client(Code::Unavailable, "node is shutting down"));
        }
        let name: Arc<str> = self.name.into();
        let supervised = supervise(ServiceSpec {
            name: name.to_string(),
            instances: self.instances,
            factory: Arc::new(move || ServiceState(factory())),
            policy: self.policy,
            mailbox: self.mailbox,
        })
        .await
        .map_err(|e| {
            Error::client(
                Code::Internal,
                format!("service {name} failed to start: {e}"),
            )
        })?;
        let ad = ServiceAd {
            version: self.version.clone(),
            endpoints: self
                .endpoints
                .names()
                .iter()
                .map(|e| e.to_string())
                .collect(),
            metadata: self.metadata.clone(),
            actors: self.instances,
        };
        let running: Arc<dyn LocalService> = Arc::new(RunningService {
            name: name.clone(),
            version: self.version,
            metadata: self.metadata,
            layers: self.host.serve_layers(),
            endpoints: Arc::new(self.endpoints),
            instances: supervised.instances,
            supervisor: supervised.supervisor.clone(),
        });
        if let Err(e) = self.host.services().insert(name.clone(), running.clone()) {
            // Name taken: the instances just started go away again.
            supervised.supervisor.stop(None);
            return Err(e);
        }
        self.host.local_changed(&name);
        // Advertised only once callable, so no peer routes here before the service can answer.
        if self.advertise {
            self.host.membership().publish(&name, &ad).await;
        }
        // A supervisor that gives up (restart budget spent) takes the service off this node and
        // out of the cluster, so callers go to healthy instances elsewhere.
        let host = Arc::downgrade(&self.host);
        let supervisor = supervised.supervisor.clone();
        let service = name.clone();
        tokio::spawn(async move {
            let _ = supervisor.wait(None).await;
            let Some(shared) = host.upgrade() else {
                return;
            };
            if shared.services().remove_if_same(&service, &running) {
                shared.local_changed(&service);
                tracing::error!(node = %shared.node_name(), %service, "service stopped by its supervisor; withdrawn");
                shared.membership().withdraw(&service).await;
            }
        });
        tracing::info!(node = %self.host.node_name(), service = %name, instances = self.instances, "service started");
        Ok(ServiceRef {
            name,
            host: Arc::downgrade(&self.host),
        })
    }
}
