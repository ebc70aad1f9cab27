//! The attempts of one call by name: choose an instance, try, learn, retry or hedge elsewhere.
//!
//! Every attempt updates its instance's load in line (calls in flight, latency, failures in a
//! row) and tells the selector actor only what changes its view. A failed attempt is tried
//! again on another instance when the request provably never reached a handler, or, for
//! idempotent calls, when the failure says the instance is in trouble; each retry waits an
//! exponential backoff with full jitter, takes a token from the service's retry budget, and
//! stays within the call's one deadline.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_actors::selector::{pick, random_unit, Strategy};

use super::exchange::{exchange, Target};
use super::route::Filter;
use super::selector::{Instance, LocalHandle, Mark, Selector};
use super::Caller;
use crate::codec::ContentType;
use crate::context::{Context, Metadata};
use crate::error::{Code, Error, Origin};

/// A failed attempt, and whether its request may have reached a handler.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    /// False only when the request provably never reached a handler.
    pub(crate) delivered: bool,
}

impl Failure {
    pub(crate) fn delivered(error: Error) -> Self {
        Self {
            error,
            delivered: true,
        }
    }

    pub(crate) fn not_delivered(error: Error) -> Self {
        Self {
            error,
            delivered: false,
        }
    }

    /// An error the serving node answered with. The runtime refuses with `Unavailable`
    /// (shutting down, no instance running) or `NotFound` (the service left that node) only
    /// before dispatch, so those never reached a handler.
    pub(crate) fn from_reply(error: Error) -> Self {
        let refused = error.origin() == Origin::Server
            && matches!(error.code(), Code::Unavailable | Code::NotFound);
        Self {
            error,
            delivered: !refused,
        }
    }

    /// Whether the failure speaks against the instance (counts towards its ejection): it is
    /// unavailable, its runtime failed, or it did not answer in time. A handler's own answers
    /// (bad request, not found, conflict...) say the instance works.
    fn is_instance_trouble(&self) -> bool {
        matches!(
            (self.error.code(), self.error.origin()),
            (Code::Unavailable, _)
                | (
                    Code::Internal | Code::Timeout,
                    Origin::Server | Origin::Client
                )
        )
    }

    /// Whether another attempt may be made: always when the request was not delivered; after
    /// delivery only for idempotent calls, and only when the instance was in trouble. A
    /// `NotFound` is worth another instance only when the one tried `advertised` the endpoint
    /// (the view was stale); otherwise the server has answered for the service.
    fn may_retry(&self, idempotent: bool, advertised: bool) -> bool {
        let stale = self.error.code() == Code::NotFound && advertised;
        let worth_it = self.is_instance_trouble() || stale;
        worth_it && (!self.delivered || (idempotent && self.is_instance_trouble()))
    }
}

/// A request that can be sent, and sent again, to this node's instance or over the network.
pub(crate) trait Payload: Send {
    type Reply: Send + 'static;

    fn endpoint(&self) -> &str;

    /// The endpoint as the context and wire header carry it (borrowed for typed calls).
    fn endpoint_name(&self) -> std::borrow::Cow<'static, str>;

    /// Starts an attempt on this node's instance. The request is handed to the mailbox now; if
    /// the service refuses it before delivery, the request is kept for another attempt.
    fn local(
        &mut self,
        service: &LocalHandle,
        ctx: Context,
    ) -> impl Future<Output = Result<Self::Reply, Failure>> + Send + 'static + use<Self>;

    /// The encoded request and its codec, for an attempt on another node.
    fn encoded(&mut self) -> Result<(Bytes, ContentType), Error>;

    fn decode(
        ct: ContentType,
        reply: &Bytes,
        from: std::net::SocketAddr,
    ) -> Result<Self::Reply, Error>;
}

/// How one call is made.
pub(crate) struct Plan<'a> {
    pub(crate) service: &'a str,
    pub(crate) deadline: Instant,
    pub(crate) metadata: Metadata,
    pub(crate) strategy: Strategy,
    pub(crate) key: Option<u64>,
    pub(crate) filter: &'a Filter,
    pub(crate) retries: u32,
    pub(crate) idempotent: bool,
    pub(crate) hedge: bool,
}

/// Makes a call by service name: selection, attempts, retries, hedging.
pub(crate) async fn run<P: Payload>(
    caller: &Caller,
    plan: Plan<'_>,
    mut payload: P,
) -> Result<P::Reply, Error> {
    plan.filter.check()?;
    let Some(selector) = caller.selectors.get(plan.service) else {
        return Err(Error::client(
            Code::NotFound,
            format!("no instance of service {} in the cluster", plan.service),
        ));
    };
    selector.budget.deposit();
    let mut tried: Vec<Arc<str>> = Vec::new();
    let mut retries = 0;
    loop {
        let instance = choose(&selector, &plan, payload.endpoint(), &tried)?;
        // The last attempt the call may make runs to the deadline: abandoning it for being
        // slow could only turn a late answer into a failure.
        let last = retries >= plan.retries;
        let hedge_after = plan.hedge.then(|| hedge_delay(caller, &instance)).flatten();
        let outcome = match hedge_after {
            None => {
                launch(
                    caller,
                    &selector,
                    instance.clone(),
                    &mut payload,
                    &plan,
                    last,
                )
                .await
            }
            // Boxed: the two-attempt state would otherwise enlarge every call's future.
            Some(delay) => {
                let hedged = Hedged {
                    caller,
                    selector: &selector,
                    plan: &plan,
                    last,
                };
                Box::pin(hedged.run(instance.clone(), delay, &mut payload, &mut tried)).await
            }
        };
        let failure = match outcome {
            Ok(reply) => return Ok(reply),
            Err(failure) => failure,
        };
        retries += 1;
        let now = Instant::now();
        let pause = backoff(caller, retries);
        if retries > plan.retries
            || !failure.may_retry(plan.idempotent, instance.has_endpoint(payload.endpoint()))
            || now + pause >= plan.deadline
            || !selector.budget.try_withdraw(now)
        {
            return Err(failure.error);
        }
        tracing::debug!(service = plan.service, instance = %instance.id, error = %failure.error, retries, "retrying on another instance");
        if !tried.contains(&instance.id) {
            tried.push(instance.id.clone());
        }
        tokio::time::sleep(pause).await;
    }
}

/// A hedged attempt: the first instance, and after `delay` without an answer a second one.
struct Hedged<'a> {
    caller: &'a Caller,
    selector: &'a Selector,
    plan: &'a Plan<'a>,
    last: bool,
}

impl<'a> Hedged<'a> {
    async fn run<P: Payload>(
        self,
        instance: Arc<Instance>,
        delay: Duration,
        payload: &mut P,
        tried: &mut Vec<Arc<str>>,
    ) -> Result<P::Reply, Failure> {
        let Hedged {
            caller,
            selector,
            plan,
            last,
        } = self;
        let first = launch(caller, selector, instance.clone(), payload, plan, last);
        let mut first = std::pin::pin!(first);
        tokio::select! {
            outcome = &mut first => outcome,
            _ = tokio::time::sleep(delay) => {
                tried.push(instance.id.clone());
                let second = choose(selector, plan, payload.endpoint(), tried)
                    .ok()
                    .filter(|other| other.id != instance.id)
                    .filter(|_| selector.budget.try_withdraw(Instant::now()));
                match second {
                    Some(other) => {
                        tracing::debug!(service = plan.service, first = %instance.id, hedge = %other.id, "hedging");
                        tried.push(other.id.clone());
                        let second = launch(caller, selector, other, payload, plan, last);
                        first_success(first, second).await
                    }
                    None => first.await,
                }
            }
        }
    }
}

/// The first successful outcome of two attempts, or the second failure.
async fn first_success<T>(
    a: impl Future<Output = Result<T, Failure>>,
    b: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    tokio::select! {
        first = &mut a => match first {
            Ok(reply) => Ok(reply),
            Err(_) => b.await,
        },
        first = &mut b => match first {
            Ok(reply) => Ok(reply),
            Err(_) => a.await,
        },
    }
}

/// Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS): a uniform
/// pause in `0..min(max, base·2^(n-1))`.
fn backoff(caller: &Caller, retry: u32) -> Duration {
    let d = &caller.defaults;
    let ceiling = d
        .backoff
        .saturating_mul(1u32 << (retry - 1).min(16))
        .min(d.max_backoff);
    ceiling.mul_f64(random_unit())
}

fn hedge_delay(caller: &Caller, instance: &Instance) -> Option<Duration> {
    instance.load.hedge_after(caller.defaults.min_hedge_delay)
}

/// An instance for the next attempt. Preference order: instances that advertise the endpoint
/// over those that do not (the server then answers for itself), untried over tried, healthy
/// over ejected (when every match is ejected, a call that might fail beats none).
fn choose(
    selector: &Selector,
    plan: &Plan<'_>,
    endpoint: &str,
    tried: &[Arc<str>],
) -> Result<Arc<Instance>, Error> {
    let table = selector.table();
    let matches = |i: &Instance| plan.filter.is_empty() || plan.filter.admits(i);
    let probing = selector.any_probing();
    let pick_where = |advertised: bool, untried: bool| {
        pick(
            plan.strategy,
            plan.key,
            &table.instances,
            &selector.round_robin,
            probing,
            |_, i| {
                matches(i)
                    && (!advertised || i.has_endpoint(endpoint))
                    && !(untried && tried.contains(&i.id))
            },
        )
    };
    let chosen = [(true, true), (true, false), (false, true), (false, false)]
        .into_iter()
        .filter(|(_, untried)| *untried || !tried.is_empty())
        .find_map(|(advertised, untried)| pick_where(advertised, untried))
        .or_else(|| table.instances.iter().position(|i| matches(i)));
    match chosen {
        Some(i) => Ok(table.instances[i].clone()),
        None if table.instances.is_empty() => Err(Error::client(
            Code::NotFound,
            format!("no instance of service {} in the cluster", plan.service),
        )),
        None => Err(Error::client(
            Code::NotFound,
            format!(
                "no instance of service {} matches the call's filter ({})",
                plan.service, plan.filter
            ),
        )),
    }
}

/// Starts one attempt on `instance`; the returned future runs it and records what it taught.
fn launch<'a, P: Payload>(
    caller: &'a Caller,
    selector: &'a Selector,
    instance: Arc<Instance>,
    payload: &mut P,
    plan: &'a Plan<'a>,
    last: bool,
) -> impl Future<Output = Result<P::Reply, Failure>> + 'a {
    let start = Instant::now();
    // An idempotent attempt that takes far longer than its instance usually does is abandoned
    // for another instance: a silently dead node must not hold the call until gossip notices.
    // Not the last attempt, which has no other instance to be abandoned for.
    let cutoff = (plan.idempotent && !last)
        .then(|| {
            instance
                .load
                .attempt_timeout(caller.defaults.min_attempt_timeout)
        })
        .flatten()
        .map(|t| start + t)
        .filter(|t| *t < plan.deadline);
    let local = instance.local.as_ref().map(|handle| {
        let ctx = Context {
            service: handle.0.clone(),
            endpoint: payload.endpoint_name(),
            request_id: caller.request_id(),
            deadline: plan.deadline,
            metadata: plan.metadata.clone(),
            peer: None,
            content_type: None,
        };
        payload.local(handle, ctx)
    });
    let remote = match local {
        Some(_) => None,
        None => Some(payload.encoded()),
    };
    let endpoint = payload.endpoint_name();
    async move {
        let _in_flight = instance.load.begin();
        let attempt = async {
            match (local, remote) {
                (Some(local), _) => local.await,
                (None, Some(Ok((body, ct)))) => {
                    let target = Target {
                        addr: instance.addr,
                        service: plan.service,
                        endpoint: &endpoint,
                    };
                    let reply = exchange(
                        caller,
                        target,
                        ct,
                        &body,
                        plan.metadata.clone(),
                        plan.deadline,
                    )
                    .await?;
                    P::decode(ct, &reply, instance.addr).map_err(Failure::delivered)
                }
                (None, Some(Err(e))) => Err(Failure::not_delivered(e)),
                (None, None) => unreachable!("an attempt is local or remote"),
            }
        };
        let outcome = match cutoff {
            None => attempt.await,
            Some(cutoff) => tokio::time::timeout_at(cutoff.into(), attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::delivered(Error::client(
                        Code::Timeout,
                        format!(
                            "{} gave no answer within {:?}, far beyond its usual latency",
                            instance.id,
                            cutoff - start
                        ),
                    )))
                }),
        };
        record(selector, &instance, &outcome, start);
        outcome
    }
}

/// Folds an attempt's outcome into the instance's load; tells the selector what matters.
fn record<T>(
    selector: &Selector,
    instance: &Instance,
    outcome: &Result<T, Failure>,
    start: Instant,
) {
    match outcome {
        Err(failure) if failure.is_instance_trouble() => {
            let run = instance.load.failed();
            selector.mark(Mark::Failed {
                id: instance.id.clone(),
                run,
            });
        }
        _ => {
            instance.load.observe(start.elapsed());
            if instance.load.succeeded() {
                selector.mark(Mark::Recovered {
                    id: instance.id.clone(),
                });
            }
        }
    }
}
