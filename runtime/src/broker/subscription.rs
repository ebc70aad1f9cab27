//! One subscription on this node: the topic actor that holds its subscriber's bounded buffer and
//! hands events to the service's instances, a window at a time.
//!
//! Publishers on this node, and the link reader for events from other nodes, push into the
//! buffer ([`LocalSubscription::push`]); the actor ([`LocalSubscription::run`]) takes events out
//! and puts each in an instance's mailbox, keeping at most `window` of them there, so a slow
//! service fills this buffer (where the overflow policy applies) rather than its mailboxes.
//! How each event ended comes back through its [`Completion`], from the instance's task.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use colony_actors::broker::{Bounded, Overflow, Pattern, Pushed, Redelivery, Subject};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::event::Payload;
use crate::context::{Context, Metadata};
use crate::error::{Code, Error};

/// Events a subscription keeps in its service's mailboxes at once, per instance (fewer if
/// the mailbox is smaller): enough that an instance never waits for the next one.
pub(crate) const WINDOW_PER_INSTANCE: usize = 64;

/// How long an at-most-once event may wait in a mailbox before it is skipped.
const AT_MOST_ONCE_DEADLINE: Duration = Duration::from_secs(3600);

/// How long to wait before trying again when no instance can take an event (all restarting,
/// or mailboxes full of calls).
const NO_INSTANCE_RETRY: Duration = Duration::from_millis(10);

/// What a subscription is, as declared on the service builder and advertised in gossip.
#[derive(Debug, Clone)]
pub(crate) struct Terms {
    pub(crate) pattern: Pattern,
    pub(crate) queue: Option<Arc<str>>,
    /// `Some` for at-least-once delivery.
    pub(crate) redelivery: Option<Redelivery>,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    /// Receive events as JSON (subscribers without Rust types: the CLI).
    pub(crate) json: bool,
    /// Where at-least-once events go after their last attempt (`None` for at-most-once).
    pub(crate) dead_letter: Option<Subject>,
}

/// Where and what to acknowledge for an at-least-once event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckTo {
    /// The publisher's delivery id.
    pub(crate) id: u64,
    pub(crate) attempt: u32,
    /// The publisher's node; `None` for this node.
    pub(crate) origin: Option<SocketAddr>,
}

/// One event on its way to a subscriber.
pub(crate) struct Delivery {
    pub(crate) subject: Arc<str>,
    pub(crate) payload: Payload,
    pub(crate) metadata: Metadata,
    /// The publisher's node; `None` for this node.
    pub(crate) from: Option<SocketAddr>,
    /// `Some` for at-least-once.
    pub(crate) ack: Option<AckTo>,
}

/// Where acknowledgements go: the broker, which answers the publisher.
pub(crate) trait AckSink: Send + Sync {
    fn ack(&self, to: AckTo, outcome: Result<(), String>);
}

/// Why an instance did not take an event.
pub(crate) enum Refusal {
    /// The payload is not an event of the subscriber's type.
    Undecodable(Error),
    /// No instance runs (all restarting or stopped).
    NoInstance,
    /// Every instance's mailbox is full.
    Full,
}

/// Hands events to a service's instances, typed: made by the service builder for each
/// subscription, over the service's `Instances`.
pub(crate) trait Port: Send + Sync {
    fn dispatch(
        &self,
        payload: &Payload,
        completion: Completion,
        ctx: Context,
    ) -> Result<(), (Refusal, Completion)>;
}

/// Why a push did not queue the event.
pub(crate) enum PushError {
    /// The subscription has ended (its service stopped or failed).
    Gone(Delivery),
    /// The buffer is full (overflow: block); from `push`, it stayed full until the deadline.
    Full(Delivery),
}

/// Counters for `colony describe` and health.
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    handled: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// One subscription of a running service on this node.
pub(crate) struct LocalSubscription {
    pub(crate) id: u64,
    pub(crate) service: Arc<str>,
    pub(crate) terms: Terms,
    buffer: Mutex<Bounded<Delivery>>,
    port: Box<dyn Port>,
    acks: Arc<dyn AckSink>,
    /// Events in the instances' mailboxes or handlers now.
    in_handler: AtomicUsize,
    window: usize,
    closed: AtomicBool,
    /// Wakes the actor: events arrived, or the subscription closed.
    ready: Notify,
    /// Wakes publishers blocked on a full buffer.
    room: Notify,
    /// Wakes the actor: an event was handled, the window has room.
    handled: Notify,
    counters: Counters,
}

impl LocalSubscription {
    pub(crate) fn new(
        id: u64,
        service: Arc<str>,
        terms: Terms,
        window: usize,
        port: Box<dyn Port>,
        acks: Arc<dyn AckSink>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            service,
            buffer: Mutex::new(Bounded::new(terms.capacity, terms.overflow)),
            terms,
            port,
            acks,
            in_handler: AtomicUsize::new(0),
            window: window.max(1),
            closed: AtomicBool::new(false),
            ready: Notify::new(),
            room: Notify::new(),
            handled: Notify::new(),
            counters: Counters::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Bounded<Delivery>> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the subscription has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Queues `delivery`, waiting for room when the buffer is full and the overflow policy
    /// blocks: until `deadline`, or with `None` for as long as the subscription lives (an event
    /// from another node, which its publisher was told was sent). Drop-oldest never waits.
    pub(crate) async fn push(
        &self,
        mut delivery: Delivery,
        deadline: Option<Instant>,
    ) -> Result<(), PushError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(delivery) {
                Err(PushError::Full(back)) => delivery = back,
                done => return done,
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline.into(), room)
                        .await
                        .is_err()
                    {
                        return Err(PushError::Full(delivery));
                    }
                }
                None => room.await,
            }
        }
    }

    /// Queues `delivery` if there is room (or the oldest can be dropped), without waiting: a
    /// full blocking buffer hands it back as `Full`.
    // The error hands the delivery back, unboxed: this is the path of every event.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_push(&self, delivery: Delivery) -> Result<(), PushError> {
        let mut buffer = self.lock();
        if self.is_closed() {
            return Err(PushError::Gone(delivery));
        }
        match buffer.push(delivery) {
            Pushed::Queued => {
                drop(buffer);
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                self.ready.notify_one();
                Ok(())
            }
            Pushed::Displaced(oldest) => {
                drop(buffer);
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.ready.notify_one();
                if let Some(ack) = oldest.ack {
                    self.acks
                        .ack(ack, Err("dropped: the subscriber's buffer was full".into()));
                }
                Ok(())
            }
            Pushed::Full(back) => Err(PushError::Full(back)),
        }
    }

    /// The topic actor: moves events from the buffer to the instances until closed.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            // Room in the window first: a slow service keeps events here, where the overflow
            // policy applies, not in its mailboxes.
            let handled = self.handled.notified();
            if self.in_handler.load(Ordering::Acquire) >= self.window && !self.is_closed() {
                handled.await;
                continue;
            }
            drop(handled);
            let ready = self.ready.notified();
            let batch: Vec<Delivery> = {
                let mut buffer = self.lock();
                let room = self
                    .window
                    .saturating_sub(self.in_handler.load(Ordering::Acquire));
                std::iter::from_fn(|| buffer.pop())
                    .take(room.max(1))
                    .collect()
            };
            if batch.is_empty() {
                if self.is_closed() {
                    return;
                }
                ready.await;
                continue;
            }
            self.room.notify_waiters();
            // One clock read per batch: the events' deadlines are counted from when they
            // leave the buffer.
            let now = Instant::now();
            for delivery in batch {
                self.dispatch(delivery, now).await;
            }
        }
    }

    /// Hands one event to an instance, waiting while none can take it (restarting, or every
    /// mailbox full of calls) until the subscription ends.
    async fn dispatch(self: &Arc<Self>, delivery: Delivery, now: Instant) {
        let mut completion = self.handing_out(delivery.ack);
        loop {
            match self
                .port
                .dispatch(&delivery.payload, completion, self.context(&delivery, now))
            {
                Ok(()) => return,
                Err((Refusal::Undecodable(e), back)) => {
                    tracing::debug!(service = %self.service, subject = %delivery.subject, error = %e.detail(), "event not decodable by its subscriber");
                    back.finish(Err(e));
                    return;
                }
                // Instances restarting (ms after a panic) or mailboxes full of calls: wait for
                // them, at-least-once too, rather than spend an attempt; a service that fails
                // for good closes this subscription, which fails what it holds.
                Err((Refusal::NoInstance | Refusal::Full, back)) => {
                    if self.is_closed() {
                        back.finish(Err(Error::server(Code::Unavailable, "unsubscribed")));
                        return;
                    }
                    completion = back;
                    tokio::time::sleep(NO_INSTANCE_RETRY).await;
                }
            }
        }
    }

    /// An event leaves the buffer for the instances: it counts in the window until its
    /// completion reports.
    fn handing_out(self: &Arc<Self>, ack: Option<AckTo>) -> Completion {
        self.in_handler.fetch_add(1, Ordering::AcqRel);
        Completion {
            sub: self.clone(),
            ack,
            armed: true,
            ran: false,
        }
    }

    fn context(&self, delivery: &Delivery, now: Instant) -> Context {
        let (deadline, attempt) = match (delivery.ack, self.terms.redelivery) {
            (Some(ack), Some(policy)) => (now + policy.ack_wait, ack.attempt),
            _ => (now + AT_MOST_ONCE_DEADLINE, 1),
        };
        Context {
            service: self.service.clone(),
            endpoint: Cow::Owned(delivery.subject.to_string()),
            request_id: delivery.ack.map_or(0, |a| a.id),
            deadline,
            metadata: delivery.metadata.clone(),
            peer: delivery.from,
            content_type: match &delivery.payload {
                Payload::Local(_) => None,
                Payload::Encoded { content_type, .. } => Some(*content_type),
            },
            attempt: attempt.max(1),
        }
    }

    /// Ends the subscription: no more pushes; what is buffered goes to the instances now (a
    /// service stopping drains its mailboxes), and what they refuse is failed (redelivered
    /// elsewhere when at-least-once) or counted as dropped.
    pub(crate) fn close(self: &Arc<Self>) {
        let left: Vec<Delivery> = {
            let mut buffer = self.lock();
            self.closed.store(true, Ordering::Release);
            std::iter::from_fn(|| buffer.pop()).collect()
        };
        self.ready.notify_one();
        self.handled.notify_one();
        self.room.notify_waiters();
        let now = Instant::now();
        for delivery in left {
            let completion = self.handing_out(delivery.ack);
            if let Err((_, back)) =
                self.port
                    .dispatch(&delivery.payload, completion, self.context(&delivery, now))
            {
                back.finish(Err(Error::server(Code::Unavailable, "unsubscribed")));
            }
        }
    }

    fn completed(&self, ack: Option<AckTo>, outcome: Result<(), String>) {
        self.in_handler.fetch_sub(1, Ordering::AcqRel);
        self.handled.notify_one();
        match &outcome {
            Ok(()) => self.counters.handled.fetch_add(1, Ordering::Relaxed),
            Err(_) if ack.is_none() => self.counters.dropped.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(ack) = ack {
            self.acks.ack(ack, outcome);
        }
    }

    /// What it has done so far, for health and `colony describe`.
    pub(crate) fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            pattern: self.terms.pattern.as_str().to_string(),
            queue: self.terms.queue.as_deref().map(str::to_string),
            at_least_once: self.terms.redelivery.is_some(),
            capacity: self.terms.capacity,
            buffered: self.lock().len(),
            in_handler: self.in_handler.load(Ordering::Relaxed),
            received: self.counters.received.load(Ordering::Relaxed),
            handled: self.counters.handled.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

/// How one subscription on one node is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStats {
    /// The subject pattern.
    pub pattern: String,
    /// The queue group, if any.
    pub queue: Option<String>,
    /// True for at-least-once delivery.
    pub at_least_once: bool,
    /// The buffer's bound.
    pub capacity: usize,
    /// Events waiting in the buffer now (never more than `capacity`).
    pub buffered: usize,
    /// Events in the instances' mailboxes or handlers now.
    pub in_handler: usize,
    /// Events received (queued in the buffer).
    pub received: u64,
    /// Events handled with `Ok`.
    pub handled: u64,
    /// At-least-once attempts that failed (`Err`, panic, stop): each redelivered or dead-lettered.
    pub failed: u64,
    /// At-most-once events lost: displaced by drop-oldest, failed, or unrun when the service
    /// stopped. (At-least-once ones displaced by drop-oldest count here too, and are redelivered.)
    pub dropped: u64,
}

/// How one event ended, told from the instance that had it. Dropped unfinished (the handler
/// panicked, or the event was dropped from a stopped instance's mailbox), it fails the attempt.
pub(crate) struct Completion {
    sub: Arc<LocalSubscription>,
    ack: Option<AckTo>,
    armed: bool,
    ran: bool,
}

impl Completion {
    /// The handler is about to run.
    pub(crate) fn running(&mut self) {
        self.ran = true;
    }

    /// The handler answered.
    pub(crate) fn finish(mut self, result: Result<(), Error>) {
        self.armed = false;
        self.sub
            .completed(self.ack, result.map_err(|e| e.detail().to_string()));
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.armed {
            let why = if self.ran {
                "the instance failed while handling the event"
            } else {
                "the instance stopped before the event ran"
            };
            self.sub.completed(self.ack, Err(why.into()));
        }
    }
}
