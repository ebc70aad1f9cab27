//! `client.request(service, msg)...await`: one call and its options.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use colony_actors::selector::{stable_hash, Strategy};

use super::attempt::{self, Failure, Payload, Plan};
use super::exchange::{exchange, Target};
use super::layered::through_layers;
use super::payload::Typed;
use super::route::{Filter, VersionFilter};
use super::Client;
use crate::codec::ContentType;
use crate::context::{Context, Metadata};
use crate::error::{Code, Error};
use crate::layer::Outgoing;
use crate::message::Message;

/// One call being set up; `.await` it (or call [`send`](Call::send)) to make it.
///
/// ```no_run
/// # use colony::prelude::*;
/// # use colony::Strategy;
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Hello { name: String }
/// # impl Message for Hello { type Reply = String; const ENDPOINT: &'static str = "Greeter.Hello"; }
/// # async fn f(client: Client) -> Result<(), Error> {
/// let reply = client
///     .request("greeter", Hello { name: "Ann".into() })
///     .version("^1.2")                       // instances whose version matches
///     .label("zone", "eu")                   // ...and whose metadata says zone=eu
///     .strategy(Strategy::LeastOutstanding)  // instead of the node's default
///     .idempotent()                          // may be sent again after delivery
///     .retries(3)
///     .timeout(std::time::Duration::from_secs(2))
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a call is made only when awaited"]
pub struct Call<'c, M> {
    client: &'c Client,
    service: &'c str,
    request: M,
    node: Option<SocketAddr>,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    content_type: ContentType,
    metadata: Metadata,
    strategy: Option<Strategy>,
    key: Option<u64>,
    filter: Filter,
    retries: Option<u32>,
    copy: Option<fn(&M) -> M>,
    hedge: bool,
}

impl<'c, M: Message> Call<'c, M> {
    pub(super) fn new(client: &'c Client, service: &'c str, request: M) -> Self {
        Self {
            client,
            service,
            request,
            node: None,
            timeout: None,
            deadline: None,
            content_type: ContentType::default(),
            metadata: Metadata::default(),
            strategy: None,
            key: None,
            filter: Filter::default(),
            retries: None,
            copy: None,
            hedge: false,
        }
    }

    /// Sends the call to the node at `addr` instead of choosing an instance by name (this
    /// node's own address stays in-process). No selection, no retries.
    pub fn at(mut self, addr: SocketAddr) -> Self {
        self.node = Some(addr);
        self
    }

    /// Overrides the node's default deadline for this call: every attempt, retry and backoff
    /// fits in it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Makes this call part of the call `ctx` is answering: it inherits the caller's remaining
    /// deadline (or keeps its own, if shorter) and metadata (entries set on this call win).
    /// Handlers that call other services should pass their context here, so a deadline holds
    /// across the whole chain of calls.
    pub fn within(mut self, ctx: &Context) -> Self {
        self.deadline = Some(match self.deadline {
            Some(own) => own.min(ctx.deadline),
            None => ctx.deadline,
        });
        for (k, v) in ctx.metadata.iter() {
            if self.metadata.get(k).is_none() {
                self.metadata.insert(k, v);
            }
        }
        self
    }

    /// Encodes a remote call as JSON instead of bincode.
    pub fn json(self) -> Self {
        self.content_type(ContentType::Json)
    }

    /// Chooses the codec of a remote call.
    pub fn content_type(mut self, content_type: ContentType) -> Self {
        self.content_type = content_type;
        self
    }

    /// Adds a metadata entry (key case-insensitive).
    pub fn metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// How to choose the instance, instead of the node's default.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Sends calls with the same key to the same instance (rendezvous hashing), whatever the
    /// strategy: about 1/N of the keys move when an instance joins or leaves.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = Some(stable_hash(key.as_ref()));
        self
    }

    /// Only instances of this version: exact (`1.2.3`) or a semver range (`^1.2`, `>=1, <2`).
    /// A malformed range fails the call with `BadRequest`.
    pub fn version(mut self, version: &str) -> Self {
        self.filter.version = Some(VersionFilter::parse(version));
        self
    }

    /// Only instances whose metadata ([`ServiceBuilder::metadata`]) has `key` = `value`.
    ///
    /// [`ServiceBuilder::metadata`]: crate::ServiceBuilder::metadata
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.filter.labels.push((key.into(), value.into()));
        self
    }

    /// Never an instance on node `node` (by name).
    pub fn exclude_node(mut self, node: impl Into<String>) -> Self {
        self.filter.exclude_nodes.push(node.into());
        self
    }

    /// Further attempts after a failure, instead of the node's default.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Declares the call safe to run twice: it may then be sent again after it was delivered
    /// (on `Unavailable`, a runtime `Internal`, or an attempt far slower than its instance's
    /// usual latency), not only when it provably never arrived.
    pub fn idempotent(mut self) -> Self
    where
        M: Clone,
    {
        self.copy = Some(<M as Clone>::clone);
        self
    }

    /// Idempotent, and hedged: when the first attempt has not answered after about its
    /// instance's 95th-percentile latency, a second goes to another instance and the first
    /// answer wins. Hedges count against the retry budget.
    pub fn hedge(self) -> Self
    where
        M: Clone,
    {
        let mut call = self.idempotent();
        call.hedge = true;
        call
    }

    /// Makes the call.
    pub async fn send(self) -> Result<M::Reply, Error> {
        let client = self.client;
        if client.caller.layers.client.is_empty() {
            return self.run().await;
        }
        let outgoing = Outgoing {
            service: self.service.to_string(),
            endpoint: M::ENDPOINT.to_string(),
            metadata: self.metadata.clone(),
            deadline: self.deadline(),
        };
        // Boxed: calls without layers should not carry this branch's state in their future.
        Box::pin(through_layers(
            client,
            outgoing,
            move |metadata, deadline| {
                let mut call = self;
                call.metadata = metadata;
                call.deadline = Some(deadline);
                // The layers have decided the deadline, own timeout included.
                call.timeout = None;
                call.run()
            },
        ))
        .await
    }

    /// The call's deadline: an inherited one ([`within`](Self::within)), cut to the call's own
    /// [`timeout`](Self::timeout) when that is shorter; else the timeout or the node's default.
    fn deadline(&self) -> Instant {
        self.deadline_at(Instant::now())
    }

    /// [`deadline`](Self::deadline) as of `now`.
    fn deadline_at(&self, now: Instant) -> Instant {
        let caller = &self.client.caller;
        let own = self.timeout.map(|t| now + t);
        match (self.deadline, own) {
            (Some(inherited), Some(own)) => inherited.min(own),
            (Some(inherited), None) => inherited,
            (None, Some(own)) => own,
            (None, None) => now + caller.defaults.timeout,
        }
    }

    /// The call itself, after any layers.
    async fn run(self) -> Result<M::Reply, Error> {
        let caller = &self.client.caller;
        // One clock read serves the deadline and the first attempt's check against it.
        let now = Instant::now();
        let deadline = self.deadline_at(now);
        let mut payload = Typed::new(self.request, self.copy, self.content_type);
        if let Some(addr) = self.node {
            // Pinned to one node: exactly one attempt there.
            let result = if caller.is_self(addr) {
                if caller.services.is_closed() {
                    // As a peer's call would be refused: it never ran, so it may go elsewhere.
                    return Err(Error::server(
                        Code::Unavailable,
                        format!("node {} is shutting down", caller.name),
                    ));
                }
                let Some(handle) = caller.services.get(self.service) else {
                    return Err(Error::server(
                        Code::NotFound,
                        format!(
                            "service {} does not run on node {}",
                            self.service, caller.name
                        ),
                    ));
                };
                let ctx = Context {
                    service: handle.0.clone(),
                    endpoint: M::ENDPOINT.into(),
                    request_id: caller.request_id(),
                    deadline,
                    metadata: self.metadata,
                    peer: None,
                    content_type: None,
                    attempt: 0,
                };
                payload.local(&handle, ctx).await
            } else {
                let (body, ct) = payload.encoded()?;
                let target = Target {
                    addr,
                    service: self.service,
                    endpoint: M::ENDPOINT,
                };
                let exchanged =
                    Box::pin(exchange(caller, target, ct, &body, self.metadata, deadline)).await;
                match exchanged {
                    Ok(reply) => Typed::<M>::decode(ct, &reply, addr).map_err(Failure::delivered),
                    Err(failure) => Err(failure),
                }
            };
            return result.map_err(|f| f.error);
        }
        let plan = Plan {
            service: self.service,
            now,
            deadline,
            metadata: self.metadata,
            strategy: self.strategy.unwrap_or(caller.defaults.strategy),
            key: self.key,
            filter: &self.filter,
            retries: self.retries.unwrap_or(caller.defaults.retries),
            idempotent: self.copy.is_some(),
            hedge: self.hedge,
        };
        attempt::run(caller, plan, payload).await
    }
}

impl<'c, M: Message> IntoFuture for Call<'c, M> {
    type Output = Result<M::Reply, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
