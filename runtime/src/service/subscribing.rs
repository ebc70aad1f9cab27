//! `node.service("billing").subscribe::<OrderPlaced>("orders.*").queue("billing")...spawn(..)`:
//! a service's subscriptions, and how an event reaches one of its instances.
//!
//! An event goes through the same mailboxes and supervision as a call: it is an envelope whose
//! request is the typed event plus its [`Completion`], and whose handle function runs the
//! state's [`Subscriber<E>`]. Nobody waits for a reply; the completion tells the subscription
//! (and, at-least-once, the publisher) how it ended, even when the instance panics.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use colony_actors::broker::{Overflow, Pattern, Redelivery, Subject, SubjectError};
use colony_actors::Instances;

use super::builder::ServiceBuilder;
use super::endpoints::AnyBox;
use super::instance::{Envelope, ReplyTo};
use super::ServiceRef;
use crate::broker::{Completion, Event, Payload, Port, Refusal, Subscriber, Terms};
use crate::context::Context;
use crate::error::Error;
use crate::message::{Handler, Message};

/// Events a subscriber's buffer holds by default.
pub(crate) const DEFAULT_BUFFER: usize = 1024;

/// Prefix of the default dead-letter subject: `colony.dead.<service>`.
pub(crate) const DEAD_LETTER_PREFIX: &str = "colony.dead.";

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A subscription as the builder holds it until spawn.
pub(crate) struct SubscriptionSpec<S> {
    pub(crate) pattern: Result<Pattern, (String, SubjectError)>,
    pub(crate) queue: Option<Arc<str>>,
    pub(crate) redelivery: Option<Redelivery>,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) json: bool,
    pub(crate) dead_letter: Option<Result<Subject, (String, SubjectError)>>,
    pub(crate) port: PortFn<S>,
}

/// Makes a subscription's typed port over an incarnation's instances.
pub(crate) type PortFn<S> = fn(Arc<Instances<Envelope<S>>>) -> Box<dyn Port>;

impl<S> SubscriptionSpec<S> {
    /// The terms to advertise, or why the declaration is wrong.
    pub(crate) fn terms(&self, service: &str) -> Result<Terms, String> {
        let pattern = self
            .pattern
            .clone()
            .map_err(|(p, e)| format!("invalid subscription pattern {p:?}: {e}"))?;
        let dead_letter = match (&self.dead_letter, self.redelivery) {
            (_, None) => None,
            (Some(subject), Some(_)) => Some(
                subject
                    .clone()
                    .map_err(|(s, e)| format!("invalid dead-letter subject {s:?}: {e}"))?,
            ),
            (None, Some(_)) => Some(
                Subject::new(format!("{DEAD_LETTER_PREFIX}{service}")).map_err(|e| {
                    format!("service name {service:?} makes no dead-letter subject: {e}")
                })?,
            ),
        };
        if let Some(queue) = &self.queue {
            if queue.is_empty() || queue.len() > 128 || queue.chars().any(char::is_whitespace) {
                return Err(format!(
                    "invalid queue group {queue:?}: 1 to 128 characters, no whitespace"
                ));
            }
        }
        Ok(Terms {
            pattern,
            queue: self.queue.clone(),
            redelivery: self.redelivery,
            capacity: self.capacity,
            overflow: self.overflow,
            json: self.json,
            dead_letter,
        })
    }
}

/// A subscription being declared: set its queue group, delivery guarantee and buffer here,
/// then go on with the service (another [`subscribe`](Self::subscribe), a
/// [`handler`](Self::handler)) or [`spawn`](Self::spawn) it.
///
/// Service-wide settings (instances, restart policy, mailbox...) go before the first
/// `subscribe`.
#[must_use = "a service starts only when spawned"]
pub struct Subscribing<S> {
    builder: ServiceBuilder<S>,
    spec: SubscriptionSpec<S>,
}

impl<S: Send + 'static> Subscribing<S> {
    pub(crate) fn new<E: Event>(builder: ServiceBuilder<S>, pattern: &str) -> Self
    where
        S: Subscriber<E>,
    {
        Self {
            builder,
            spec: SubscriptionSpec {
                pattern: Pattern::new(pattern).map_err(|e| (pattern.to_string(), e)),
                queue: None,
                redelivery: None,
                capacity: DEFAULT_BUFFER,
                overflow: Overflow::Block,
                // A subscriber without Rust types (the CLI's) gets events as JSON.
                json: TypeId::of::<E>() == TypeId::of::<serde_json::Value>(),
                dead_letter: None,
                port: typed_port::<S, E>,
            },
        }
    }

    /// Joins queue group `group`: of all the subscriptions in the cluster that share it, one
    /// gets each event (balanced across nodes), where plain subscriptions each get every event.
    pub fn queue(mut self, group: impl Into<String>) -> Self {
        self.spec.queue = Some(group.into().into());
        self
    }

    /// At-least-once delivery with the default [`Redelivery`]: the handler's `Ok` acknowledges;
    /// `Err`, a panic, the ack deadline (30 s) passing or the node dying has the event sent again
    /// (5 attempts, backoff from 100 ms), then to the dead-letter subject. The default is
    /// at-most-once: fastest, nothing resent.
    pub fn at_least_once(self) -> Self {
        self.redelivery(Redelivery::default())
    }

    /// At-least-once delivery with these ack deadline, attempts and backoff.
    pub fn redelivery(mut self, policy: Redelivery) -> Self {
        self.spec.redelivery = Some(Redelivery {
            max_attempts: policy.max_attempts.max(1),
            ack_wait: policy.ack_wait.max(Duration::from_millis(1)),
            ..policy
        });
        self
    }

    /// Where at-least-once events go after their last attempt, as a [`DeadLetter`]
    /// (default `colony.dead.<service>`).
    ///
    /// [`DeadLetter`]: crate::DeadLetter
    pub fn dead_letter(mut self, subject: &str) -> Self {
        self.spec.dead_letter = Some(Subject::new(subject).map_err(|e| (subject.to_string(), e)));
        self
    }

    /// How many events may wait for this subscriber on its node (default 1024). Never more:
    /// see [`overflow`](Self::overflow).
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.spec.capacity = capacity.max(1);
        self
    }

    /// What a full buffer does: [`Overflow::Block`] (default) makes publishers wait, within
    /// their deadline; [`Overflow::DropOldest`] drops the oldest waiting event and counts it.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.spec.overflow = overflow;
        self
    }

    fn done(mut self) -> ServiceBuilder<S> {
        self.builder.subscriptions.push(self.spec);
        self.builder
    }

    /// Another subscription of the same service.
    pub fn subscribe<E: Event>(self, pattern: &str) -> Subscribing<S>
    where
        S: Subscriber<E>,
    {
        self.done().subscribe::<E>(pattern)
    }

    /// The service also answers calls of `M`.
    pub fn handler<M: Message>(self) -> ServiceBuilder<S>
    where
        S: Handler<M>,
    {
        self.done().handler::<M>()
    }

    /// Starts the service; see [`ServiceBuilder::spawn`]. Its subscriptions are advertised with
    /// it once it can take events.
    pub async fn spawn<F>(self, factory: F) -> Result<ServiceRef, Error>
    where
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.done().spawn(factory).await
    }
}

/// An event in an instance's mailbox: the value and where to say how it ended.
struct EventCall<E> {
    event: E,
    completion: Completion,
}

struct TypedPort<S, E> {
    instances: Arc<Instances<Envelope<S>>>,
    event: PhantomData<fn() -> E>,
}

fn typed_port<S: Subscriber<E>, E: Event>(instances: Arc<Instances<Envelope<S>>>) -> Box<dyn Port> {
    Box::new(TypedPort::<S, E> {
        instances,
        event: PhantomData,
    })
}

impl<S: Subscriber<E>, E: Event> Port for TypedPort<S, E> {
    fn dispatch(
        &self,
        payload: &Payload,
        completion: Completion,
        ctx: Context,
    ) -> Result<(), (Refusal, Completion)> {
        let event = match payload.to_event::<E>() {
            Ok(event) => event,
            Err(e) => return Err((Refusal::Undecodable(e), completion)),
        };
        let envelope = Envelope {
            handle: handle_event::<S, E>,
            request: Box::new(EventCall { event, completion }),
            ctx,
            reply: ReplyTo::detached(),
        };
        self.instances.send(envelope).map_err(|refused| {
            let why = match &refused {
                colony_actors::SendError::NoInstance(_) => Refusal::NoInstance,
                colony_actors::SendError::Full(_) => Refusal::Full,
            };
            let call = refused
                .into_inner()
                .request
                .downcast::<EventCall<E>>()
                .expect("the request was boxed as this event call just above");
            (why, call.completion)
        })
    }
}

fn handle_event<'a, S: Subscriber<E>, E: Event>(
    state: &'a mut S,
    request: AnyBox,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<AnyBox, Error>> {
    Box::pin(async move {
        let Ok(call) = request.downcast::<EventCall<E>>() else {
            return Err(Error::internal(
                "wrong event type in a subscriber's mailbox",
            ));
        };
        let EventCall {
            event,
            mut completion,
        } = *call;
        completion.running();
        // A panic in `handle` drops the completion unfinished: the attempt fails.
        let result = state.handle(event, ctx).await;
        completion.finish(result);
        Ok(Box::new(()) as AnyBox)
    })
}
