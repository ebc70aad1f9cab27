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
use colony_actors::selector::{pick, random_below, random_unit, Strategy};

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
    /// The attempt was abandoned at its cutoff, far past its instance's usual latency.
    abandoned: bool,
}

impl Failure {
    pub(crate) fn delivered(error: Error) -> Self {
        Self {
            error,
            delivered: true,
            abandoned: false,
        }
    }

    pub(crate) fn not_delivered(error: Error) -> Self {
        Self {
            error,
            delivered: false,
            abandoned: false,
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
            abandoned: false,
        }
    }

    /// Whether the failure speaks against the instance (counts towards its ejection): it is
    /// unavailable, its runtime failed, it refused our certificate, or it was abandoned far past
    /// its usual latency. A handler's own answers (bad request, not found, conflict...) say the
    /// instance works, and a call's own deadline running out says nothing about the instance.
    fn is_instance_trouble(&self) -> bool {
        self.abandoned
            || matches!(
                (self.error.code(), self.error.origin()),
                (Code::Unavailable, _)
                    | (Code::Internal, Origin::Server | Origin::Client)
                    | (Code::Unauthorized, Origin::Client)
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

    /// Whether another attempt can still carry the request (a non-idempotent request handed to
    /// serve layers that refused it is gone).
    fn can_resend(&self) -> bool;

    fn decode(
        ct: ContentType,
        reply: &Bytes,
        from: std::net::SocketAddr,
    ) -> Result<Self::Reply, Error>;
}

/// How one call is made.
pub(crate) struct Plan<'a> {
    pub(crate) service: &'a str,
    /// A clock reading taken just before the call starts: the first attempt checks the
    /// deadline against it instead of reading the clock again (a read costs tens of ns).
    pub(crate) now: Instant,
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
    let mut last_failure: Option<Failure> = None;
    let mut now = plan.now;
    loop {
        if now >= plan.deadline {
            return Err(last_failure.map_or_else(
                || {
                    Error::client(
                        Code::Timeout,
                        "the call's deadline passed before it was sent",
                    )
                },
                |f| f.error,
            ));
        }
        let (instance, peers) = match choose(&selector, &plan, payload.endpoint(), &tried) {
            Ok(chosen) => chosen,
            // The table emptied during the call: the real failure says more.
            Err(e) => return Err(last_failure.map_or(e, |f| f.error)),
        };
        // An attempt is cut short only when another can follow it: not the last one the call
        // may make, not the only instance, not with the retry budget spent.
        let shape = Shape {
            timed: peers > 1,
            cut: plan.idempotent
                && peers > 1
                && retries < plan.retries
                && selector.budget.available(),
        };
        let hedge_after = plan.hedge.then(|| hedge_delay(caller, &instance)).flatten();
        let outcome = match hedge_after {
            None => launch(caller, &selector, &instance, &mut payload, &plan, shape).await,
            // Boxed: the two-attempt state would otherwise enlarge every call's future.
            Some(delay) => {
                let hedged = Hedged {
                    caller,
                    selector: &selector,
                    plan: &plan,
                    shape,
                };
                Box::pin(hedged.run(instance.clone(), delay, &mut payload, &mut tried)).await
            }
        };
        let failure = match outcome {
            Ok(reply) => return Ok(reply),
            Err(failure) => failure,
        };
        retries += 1;
        now = Instant::now();
        let pause = backoff(caller, retries);
        if retries > plan.retries
            || !failure.may_retry(plan.idempotent, instance.has_endpoint(payload.endpoint()))
            || !payload.can_resend()
            || now + pause >= plan.deadline
            || !selector.budget.try_withdraw(now)
        {
            return Err(failure.error);
        }
        tracing::debug!(service = plan.service, instance = %instance.id, error = %failure.error, retries, "retrying on another instance");
        if !tried.contains(&instance.id) {
            tried.push(instance.id.clone());
        }
        last_failure = Some(failure);
        tokio::time::sleep(pause).await;
        now = Instant::now();
    }
}

/// How one attempt runs.
#[derive(Clone, Copy)]
struct Shape {
    /// Measure its latency: only worth it when there is a choice to inform.
    timed: bool,
    /// Abandon it at its instance's cutoff (idempotent calls that can go elsewhere).
    cut: bool,
}

/// A hedged attempt: the first instance, and after `delay` without an answer a second one.
struct Hedged<'a> {
    caller: &'a Caller,
    selector: &'a Selector,
    plan: &'a Plan<'a>,
    shape: Shape,
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
            shape,
        } = self;
        let first = launch(caller, selector, &instance, payload, plan, shape);
        let mut first = std::pin::pin!(first);
        tokio::select! {
            // An answer already there wins over a hedge.
            biased;
            outcome = &mut first => outcome,
            _ = tokio::time::sleep(delay) => {
                tried.push(instance.id.clone());
                let second = choose(selector, plan, payload.endpoint(), tried)
                    .ok()
                    .map(|(other, _)| other)
                    .filter(|other| other.id != instance.id)
                    .filter(|_| selector.budget.try_withdraw(Instant::now()));
                match second {
                    Some(other) => {
                        tracing::debug!(service = plan.service, first = %instance.id, hedge = %other.id, "hedging");
                        tried.push(other.id.clone());
                        let second = launch(caller, selector, &other, payload, plan, shape);
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
) -> Result<(Arc<Instance>, usize), Error> {
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
        .or_else(|| any_match(&table.instances, matches));
    match chosen {
        Some(i) => Ok((table.instances[i].clone(), table.instances.len())),
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

/// A random instance among those `matches` admits, whatever their health.
fn any_match(instances: &[Arc<Instance>], matches: impl Fn(&Instance) -> bool) -> Option<usize> {
    let all: Vec<usize> = (0..instances.len())
        .filter(|&i| matches(&instances[i]))
        .collect();
    (!all.is_empty()).then(|| all[random_below(all.len())])
}

/// Starts one attempt on `instance`; the returned future runs it and records what it taught.
fn launch<'a, P: Payload>(
    caller: &'a Caller,
    selector: &'a Selector,
    instance: &'a Instance,
    payload: &mut P,
    plan: &'a Plan<'a>,
    shape: Shape,
) -> impl Future<Output = Result<P::Reply, Failure>> + 'a {
    let start = shape.timed.then(Instant::now);
    // An idempotent attempt that takes far longer than its instance usually does is abandoned
    // for another instance: a silently dead node must not hold the call until gossip notices.
    let cutoff = start
        .filter(|_| shape.cut)
        .and_then(|start| {
            instance
                .load
                .attempt_timeout(caller.defaults.min_attempt_timeout)
                .map(|t| start + t)
        })
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
            attempt: 0,
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
        let outcome = match (local, cutoff) {
            // The common local attempt, awaited in place: this future stays about the size of
            // the mailbox round trip, since every call's future carries (and moves) it.
            (Some(local), None) => local.await,
            // Boxed: a network exchange's state is large, and an attempt with a cutoff carries
            // a timer; neither should enlarge every local call's future.
            (local, cutoff) => {
                let endpoint = &endpoint;
                Box::pin(async move {
                    let attempt = async {
                        match (local, remote) {
                            (Some(local), _) => local.await,
                            (None, Some(Ok((body, ct)))) => {
                                let target = Target {
                                    addr: instance.addr,
                                    service: plan.service,
                                    endpoint,
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
                    match cutoff {
                        None => attempt.await,
                        Some(cutoff) => tokio::time::timeout_at(cutoff.into(), attempt)
                            .await
                            .unwrap_or_else(|_| {
                                let waited = start.map_or(Duration::ZERO, |s| cutoff - s);
                                Err(Failure {
                                    abandoned: true,
                                    ..Failure::delivered(Error::client(
                                        Code::Timeout,
                                        format!(
                                            "{} gave no answer within {waited:?}, far beyond its \
                                             usual latency",
                                            instance.id
                                        ),
                                    ))
                                })
                            }),
                    }
                })
                .await
            }
        };
        record(selector, instance, &outcome, start);
        outcome
    }
}

/// Folds an attempt's outcome into the instance's load; tells the selector what matters.
fn record<T>(
    selector: &Selector,
    instance: &Instance,
    outcome: &Result<T, Failure>,
    start: Option<Instant>,
) {
    match outcome {
        Err(failure) if failure.is_instance_trouble() => {
            let run = instance.load.failed();
            selector.mark(Mark::Failed {
                key: instance.key.clone(),
                run,
            });
        }
        _ => {
            if let Some(start) = start {
                instance.load.observe(start.elapsed());
            }
            if instance.load.succeeded() {
                selector.mark(Mark::Recovered {
                    key: instance.key.clone(),
                });
            }
        }
    }
}
