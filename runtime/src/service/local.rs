//! The services running on this node, reachable by name without the network.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use colony_actors::ractor::ActorRef;
use colony_actors::SupervisorMsg;
use colony_actors::{Failure, Instances, SendError};
use dashmap::DashMap;
use tokio::sync::oneshot;

use super::endpoints::{AnyBox, Endpoints, WireCodec};
use super::instance::{Envelope, ReplyTo};
use crate::broker::{LocalSubscription, LocalSubscriptions, SubscriptionAd};
use crate::codec::ContentType;
use crate::context::Context;
use crate::error::{Code, Error, Origin};
use crate::layer::ServeLayer;
use crate::membership::ServiceAd;

/// A reply on its way back from an instance.
pub(crate) type Pending = oneshot::Receiver<Result<AnyBox, Error>>;

/// A request the service did not take, handed back with the reason: it never reached an
/// instance, so it may be sent elsewhere.
pub(crate) struct Refused {
    pub(crate) error: Error,
    pub(crate) request: AnyBox,
}

/// What the node needs from a running service, whatever its state type.
pub(crate) trait LocalService: Send + Sync {
    fn version(&self) -> &str;
    fn metadata(&self) -> &BTreeMap<String, String>;
    fn endpoints(&self) -> Vec<&'static str>;
    /// The endpoint's registered name and codec.
    fn codec(&self, endpoint: &str) -> Option<(&'static str, WireCodec)>;
    /// Puts a request in the mailbox of the instance with the fewest messages waiting.
    fn dispatch(&self, endpoint: &str, request: AnyBox, ctx: Context) -> Result<Pending, Refused>;
    /// The node's serve layers, run before delivery.
    fn layers(&self) -> &[Arc<dyn ServeLayer>];
    fn live_instances(&self) -> usize;
    /// Instances asked for (live or restarting).
    fn slots(&self) -> usize;
    /// Calls waiting in the instances' mailboxes, the ones at hand included.
    fn queued(&self) -> u64;
    fn restarts(&self) -> u64;
    fn last_failure(&self) -> Option<Failure>;
    /// What gossip advertises for it.
    fn ad(&self) -> ServiceAd;
    fn supervisor(&self) -> &ActorRef<SupervisorMsg>;
    /// The service's subscriptions on this node.
    fn subscriptions(&self) -> &[Arc<LocalSubscription>];
}

pub(crate) struct RunningService<S> {
    pub(crate) name: Arc<str>,
    pub(crate) version: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) endpoints: Arc<Endpoints<S>>,
    pub(crate) instances: Arc<Instances<Envelope<S>>>,
    pub(crate) supervisor: ActorRef<SupervisorMsg>,
    pub(crate) layers: Arc<[Arc<dyn ServeLayer>]>,
    pub(crate) subscriptions: Vec<Arc<LocalSubscription>>,
}

impl<S: Send + 'static> LocalService for RunningService<S> {
    fn version(&self) -> &str {
        &self.version
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn endpoints(&self) -> Vec<&'static str> {
        self.endpoints.names()
    }

    fn codec(&self, endpoint: &str) -> Option<(&'static str, WireCodec)> {
        self.endpoints.get(endpoint).map(|r| (r.name, r.codec))
    }

    fn dispatch(&self, endpoint: &str, request: AnyBox, ctx: Context) -> Result<Pending, Refused> {
        // By request type first: no hashing on the hot path, and a decoded remote request
        // always matches the route that decoded it.
        let route = match self.endpoints.by_type((*request).type_id()) {
            Some(route) if route.name == endpoint => route,
            _ => {
                let error = if self.endpoints.get(endpoint).is_some() {
                    Error::server(
                        Code::BadRequest,
                        format!("{endpoint} is registered with another request type"),
                    )
                } else {
                    Error::server(
                        Code::NotFound,
                        format!("service {} has no endpoint {endpoint}", ctx.service),
                    )
                };
                return Err(Refused { error, request });
            }
        };
        let (reply, pending) = oneshot::channel();
        let envelope = Envelope {
            handle: route.handle,
            request,
            ctx,
            reply: ReplyTo::new(reply),
        };
        self.instances
            .send(envelope)
            .map(|()| pending)
            .map_err(|refused| {
                let detail = match &refused {
                    SendError::NoInstance(_) => format!("no running instance of {}", self.name),
                    SendError::Full(_) => format!(
                        "every instance of {} has a full mailbox; try another node",
                        self.name
                    ),
                };
                Refused {
                    error: Error::server(Code::Unavailable, detail),
                    request: refused.into_inner().request,
                }
            })
    }

    fn layers(&self) -> &[Arc<dyn ServeLayer>] {
        &self.layers
    }

    fn live_instances(&self) -> usize {
        self.instances.live()
    }

    fn slots(&self) -> usize {
        self.instances.slots()
    }

    fn queued(&self) -> u64 {
        self.instances
            .depths()
            .into_iter()
            .flatten()
            .map(u64::from)
            .sum()
    }

    fn restarts(&self) -> u64 {
        self.instances.restarts()
    }

    fn last_failure(&self) -> Option<Failure> {
        self.instances.last_failure()
    }

    fn ad(&self) -> ServiceAd {
        ServiceAd {
            version: self.version.clone(),
            endpoints: self.endpoints().iter().map(|e| e.to_string()).collect(),
            metadata: self.metadata.clone(),
            actors: self.instances.slots(),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|s| SubscriptionAd::of(s))
                .collect(),
        }
    }

    fn supervisor(&self) -> &ActorRef<SupervisorMsg> {
        &self.supervisor
    }

    fn subscriptions(&self) -> &[Arc<LocalSubscription>] {
        &self.subscriptions
    }
}

/// Services on this node by name.
#[derive(Default)]
pub(crate) struct LocalServices {
    by_name: DashMap<Arc<str>, Arc<dyn LocalService>>,
    /// The subscriptions of the services in `by_name`: registered with their service, ended
    /// when it is removed.
    pub(crate) subscriptions: LocalSubscriptions,
    /// Set once the node shuts down: new calls are refused, from this process and from peers.
    closed: AtomicBool,
}

impl LocalServices {
    /// Refuses new calls from now on (the node is shutting down; queued ones still run).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The service and its interned name, cloned out so no map guard is held.
    pub(crate) fn get(&self, name: &str) -> Option<(Arc<str>, Arc<dyn LocalService>)> {
        self.by_name
            .get(name)
            .map(|e| (e.key().clone(), e.value().clone()))
    }

    /// Adds a service; fails if the name is taken.
    pub(crate) fn insert(
        &self,
        name: Arc<str>,
        service: Arc<dyn LocalService>,
    ) -> Result<(), Error> {
        use dashmap::mapref::entry::Entry;
        match self.by_name.entry(name) {
            Entry::Occupied(e) => Err(Error::client(
                Code::Conflict,
                format!("service {} already runs on this node", e.key()),
            )),
            Entry::Vacant(e) => {
                self.subscriptions.add(service.subscriptions());
                e.insert(service);
                Ok(())
            }
        }
    }

    /// True if `service` is the one serving `name` now (not stopped, failed or replaced).
    pub(crate) fn is_serving(&self, name: &str, service: &Arc<dyn LocalService>) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current.value(), service))
    }

    /// Removes `name` only if it is still `service` (not a newer service of the same name).
    pub(crate) fn remove_if_same(&self, name: &str, service: &Arc<dyn LocalService>) -> bool {
        let removed = self
            .by_name
            .remove_if(name, |_, current| Arc::ptr_eq(current, service));
        if let Some((_, service)) = &removed {
            self.subscriptions.end(service.subscriptions());
        }
        removed.is_some()
    }

    /// Removes `name`; its subscriptions end (what they buffered goes to its instances).
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<dyn LocalService>> {
        let (_, service) = self.by_name.remove(name)?;
        self.subscriptions.end(service.subscriptions());
        Some(service)
    }

    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<_> = self.by_name.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    /// Removes and returns every service (for shutdown).
    pub(crate) fn drain(&self) -> Vec<Arc<dyn LocalService>> {
        let names = self.names();
        names.iter().filter_map(|n| self.remove(n)).collect()
    }
}

/// Waits for an instance's reply until `deadline`. `waiter` is whoever gives up at the deadline:
/// the caller's side for in-process calls, the serving node for calls that came over the wire.
pub(crate) async fn await_reply(
    pending: Pending,
    deadline: Instant,
    endpoint: &str,
    waiter: Origin,
) -> Result<AnyBox, Error> {
    match tokio::time::timeout_at(deadline.into(), pending).await {
        Ok(Ok(reply)) => reply,
        // The instance dropped the reply: it panicked or was stopped with the call queued.
        Ok(Err(_)) => Err(Error::server(
            Code::Internal,
            format!("instance failed or stopped while handling {endpoint}"),
        )),
        Err(_) => Err(Error::new(
            Code::Timeout,
            format!("{endpoint} did not answer before its deadline"),
        )
        .with_origin(waiter)),
    }
}

/// Runs one encoded request against a service on this node: decode with the endpoint's codec,
/// dispatch to an instance, wait until the deadline, encode the reply in the same codec.
/// The remote path and JSON calls from this node both come through here.
pub(crate) async fn call_encoded(
    service: &dyn LocalService,
    ctx: Context,
    content_type: ContentType,
    body: &[u8],
    waiter: Origin,
) -> Result<Vec<u8>, Error> {
    let (endpoint, codec) = service.codec(&ctx.endpoint).ok_or_else(|| {
        Error::server(
            Code::NotFound,
            format!("service {} has no endpoint {}", ctx.service, ctx.endpoint),
        )
    })?;
    let request = (codec.decode_request)(content_type, body)
        .map_err(|e| Error::server(Code::BadRequest, e.detail()))?;
    let reply = deliver(service, endpoint, request, ctx, waiter).await?;
    (codec.encode_reply)(content_type, &reply)
        .map_err(|e| Error::server(Code::Internal, e.detail()))
}

/// Runs the service's serve layers (if any), then hands the request to an instance and waits
/// for its reply until the call's deadline.
pub(crate) async fn deliver(
    service: &dyn LocalService,
    endpoint: &str,
    request: AnyBox,
    ctx: Context,
    waiter: Origin,
) -> Result<AnyBox, Error> {
    if service.layers().is_empty() {
        return dispatch_and_wait(service, endpoint, request, ctx, waiter).await;
    }
    super::layered::serve(service, endpoint, request, ctx, waiter).await
}

/// Hands the request to an instance and waits for its reply until the call's deadline.
pub(super) async fn dispatch_and_wait(
    service: &dyn LocalService,
    endpoint: &str,
    request: AnyBox,
    ctx: Context,
    waiter: Origin,
) -> Result<AnyBox, Error> {
    let deadline = ctx.deadline;
    let pending = service
        .dispatch(endpoint, request, ctx)
        .map_err(|r| r.error)?;
    await_reply(pending, deadline, endpoint, waiter).await
}

/// The caller's typed value out of an instance's reply.
pub(crate) fn downcast_reply<R: Any>(reply: AnyBox, endpoint: &str) -> Result<R, Error> {
    reply.downcast::<R>().map(|r| *r).map_err(|_| {
        Error::server(
            Code::Internal,
            format!("{endpoint} replied with another type"),
        )
    })
}
