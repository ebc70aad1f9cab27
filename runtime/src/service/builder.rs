//! `node.service("name")...spawn(factory)`: declaring and starting a service.

use std::collections::BTreeMap;
use std::sync::Arc;

use colony_actors::{supervise, RestartPolicy, ServiceSpec, DEFAULT_MAILBOX};

use super::endpoints::Endpoints;
use super::instance::ServiceState;
use super::lifecycle::{Hooks, Lifecycle};
use super::local::{LocalService, RunningService};
use super::node_supervisor::NodeSupervisorMsg;
use super::recovery::Recovery;
use super::roster::{Entry, Launch};
use super::subscribing::{PortFn, Subscribing, SubscriptionSpec};
use super::Host;
use super::ServiceRef;
use crate::broker::{
    next_subscription_id, AckSink, Event, LocalSubscription, Subscriber, Terms, WINDOW_PER_INSTANCE,
};
use crate::error::{Code, Error};
use crate::layer::ServeLayer;
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
    recovery: Recovery,
    hooks: Option<Hooks<S>>,
    endpoints: Endpoints<S>,
    pub(super) subscriptions: Vec<SubscriptionSpec<S>>,
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
            recovery: Recovery::default(),
            hooks: None,
            endpoints: Endpoints::default(),
            subscriptions: Vec::new(),
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

    /// What the node does when the service fails past its restart budget: it is always marked
    /// failed and withdrawn at once; then by default it is restarted after a cool-down that
    /// doubles from 10 s to 5 min (see [`Recovery`]).
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Runs the state's [`Lifecycle`] hooks: `started` in each new instance before its first
    /// call, `stopping` when an instance stops on purpose.
    pub fn lifecycle(mut self) -> Self
    where
        S: Lifecycle,
    {
        self.hooks = Some(Hooks::of());
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

    /// Subscribes the service to `pattern` (a subject such as `orders.created`, or with
    /// wildcards: `orders.*` one token, `orders.>` the rest): each instance handles events of
    /// type `E` with its [`Subscriber<E>`]. Set the subscription's queue group, guarantee and
    /// buffer on what this returns; see [`Subscribing`].
    pub fn subscribe<E: Event>(self, pattern: &str) -> Subscribing<S>
    where
        S: Subscriber<E>,
    {
        Subscribing::new::<E>(self, pattern)
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
        if self.endpoints.names().is_empty() && self.subscriptions.is_empty() {
            return refuse(format!(
                "service {} has no handlers and no subscriptions",
                self.name
            ));
        }
        let mut subscriptions = Vec::new();
        for spec in self.subscriptions {
            match spec.terms(&self.name) {
                Ok(terms) => subscriptions.push((terms, spec.port)),
                Err(why) => return refuse(format!("service {}: {why}", self.name)),
            }
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
        let launch = launcher(
            name.clone(),
            Arc::new(factory),
            self.hooks,
            self.policy,
            self.mailbox,
            LaunchAd {
                version: self.version,
                metadata: self.metadata,
                endpoints: Arc::new(self.endpoints),
                layers: self.host.serve_layers(),
                subscriptions,
                acks: self.host.acks(),
            },
        );
        let entry = Entry::new(
            name.clone(),
            launch,
            self.recovery,
            self.advertise,
            self.instances,
        );
        if self.host.services().get(&name).is_some() {
            return Err(Error::client(
                Code::Conflict,
                format!("service {name} already runs on this node"),
            ));
        }
        // On a task of its own: a caller that stops waiting (a timeout around `spawn`) does not
        // leave the service half-declared; it starts, or is undeclared, all the same.
        let host = self.host.clone();
        let declared = tokio::spawn(async move {
            // Declared before it starts, so a failure in its first moments finds its entry.
            let roster = host.roster();
            let previous = roster.get(&entry.name);
            let entry = roster.insert(entry);
            let started = entry.start(&host).await;
            if started.is_err() {
                // A failed service this one was to replace keeps its place.
                match previous {
                    Some(previous) => {
                        // Its cool-down timer may have fired while it was displaced (and been
                        // ignored then): set it again.
                        let pending = previous.pending_restart();
                        if roster.restore(previous.clone(), &entry) {
                            if let (Some((wait, escalation)), Some(root)) =
                                (pending, host.node_supervisor())
                            {
                                root.send_after(wait, move || {
                                    NodeSupervisorMsg::Restart(previous, escalation)
                                });
                            }
                        }
                    }
                    None => roster.remove_if_same(&entry),
                }
            }
            started
        });
        declared
            .await
            .map_err(|e| Error::internal(format!("service {name} failed to start: {e}")))??;
        tracing::info!(node = %self.host.node_name(), service = %name, instances = self.instances, "service started");
        Ok(ServiceRef {
            name,
            host: Arc::downgrade(&self.host),
        })
    }
}

/// What every incarnation of a service is advertised and served with.
struct LaunchAd<S> {
    version: String,
    metadata: BTreeMap<String, String>,
    endpoints: Arc<Endpoints<S>>,
    layers: Arc<[Arc<dyn ServeLayer>]>,
    subscriptions: Vec<(Terms, PortFn<S>)>,
    acks: Arc<dyn AckSink>,
}

/// How to start an incarnation of the service: at spawn, and again after it failed.
fn launcher<S: Send + 'static>(
    name: Arc<str>,
    factory: Arc<dyn Fn() -> S + Send + Sync>,
    hooks: Option<Hooks<S>>,
    policy: RestartPolicy,
    mailbox: usize,
    ad: LaunchAd<S>,
) -> Launch {
    let ad = Arc::new(ad);
    Arc::new(move |instances, parent, gave_up| {
        let (name, factory, ad) = (name.clone(), factory.clone(), ad.clone());
        Box::pin(async move {
            let supervised = supervise(ServiceSpec {
                name: name.to_string(),
                instances,
                factory: Arc::new(move || ServiceState(factory(), hooks)),
                policy,
                mailbox,
                parent,
                gave_up,
            })
            .await
            .map_err(|e| {
                Error::client(
                    Code::Internal,
                    format!("service {name} failed to start: {}", start_error(&e)),
                )
            })?;
            // Each incarnation subscribes afresh (new ids): events for the old one's
            // subscriptions find nothing here and are failed, so the publisher redelivers them.
            let subscriptions = ad
                .subscriptions
                .iter()
                .map(|(terms, port)| {
                    let sub = LocalSubscription::new(
                        next_subscription_id(),
                        name.clone(),
                        terms.clone(),
                        instances * mailbox.min(WINDOW_PER_INSTANCE),
                        port(supervised.instances.clone()),
                        ad.acks.clone(),
                    );
                    tokio::spawn(sub.clone().run());
                    sub
                })
                .collect();
            Ok(Arc::new(RunningService {
                subscriptions,
                name,
                version: ad.version.clone(),
                metadata: ad.metadata.clone(),
                layers: ad.layers.clone(),
                endpoints: ad.endpoints.clone(),
                instances: supervised.instances,
                supervisor: supervised.supervisor,
            }) as Arc<dyn LocalService>)
        })
    })
}

/// The innermost reason a supervisor did not start (an instance's `started` hook, usually),
/// without ractor's wrapping.
fn start_error(e: &colony_actors::ractor::SpawnErr) -> String {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        reason = inner.to_string();
        source = inner.source();
    }
    reason
}
