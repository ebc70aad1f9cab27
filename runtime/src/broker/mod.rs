//! Pub/sub without a server: topics are actors on every node, subscriptions travel in gossip,
//! and a publish sends one copy per subscribed node over QUIC.
//!
//! ```text
//! Client::publish (publish.rs)
//!  └ Broker::publish (deliver.rs)       the subject's Route (resolve.rs), cached: this node's
//!                                       subscriptions (local.rs) and the gossip view's
//!                                       (routes.rs); every plain one, one member per queue group
//!     ├ this node: LocalSubscription::try_push (subscription.rs)  the value itself, no encoding
//!     └ each other node: one event frame (frame.rs) on its link (link.rs)
//!          peer: serve_link -> receive -> LocalSubscription::try_push
//! LocalSubscription::run: buffer -> an instance's mailbox -> Subscriber<E>::handle
//!  └ Completion: at-least-once acks go back to the publisher's Outbox (outbox.rs), which
//!    resends failed attempts and publishes dead letters (redeliver.rs)
//! ```
//!
//! The decisions (subjects, wildcard table, redelivery, bounded buffers) are plain state in
//! `colony_actors::broker`; this module is their I/O.

mod deliver;
mod event;
mod frame;
mod link;
mod local;
mod outbox;
mod publish;
mod redeliver;
mod resolve;
mod routes;
mod subscription;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use colony_quic::Endpoint;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::error::{Code, Error};
use crate::membership::{ClusterView, Registry};
use crate::service::{BrokerHealth, LocalServices};

pub(crate) use event::Payload;
pub use event::{DeadLetter, Event, Subscriber};
pub(crate) use frame::LINK;
pub(crate) use local::{next_subscription_id, LocalSubscriptions};
pub use publish::{Publish, Published};
pub(crate) use routes::{ClusterSubscriptions, SubscriptionAd};
pub use routes::{Subscription, SubscriptionInfo};
pub use subscription::SubscriptionStats;
pub(crate) use subscription::{
    AckSink, AckTo, Completion, LocalSubscription, Port, Refusal, Terms, WINDOW_PER_INSTANCE,
};

use link::Link;
use outbox::{Due, Outbox};

/// Largest event body that crosses the network, like NATS's default `max_payload`.
pub(crate) const MAX_EVENT: usize = 1024 * 1024;

/// Counters of the node's broker.
#[derive(Default)]
struct Counters {
    /// Events received for a subscription this node no longer has (at-most-once: lost).
    unrouted: AtomicU64,
    /// Frames that did not decode (the link goes on).
    malformed: AtomicU64,
    /// Frames lost when a link broke.
    lost: Arc<AtomicUsize>,
}

/// The node's broker: resolves publishes, runs links to peers, keeps at-least-once deliveries
/// until acknowledged.
pub(crate) struct Broker {
    node: String,
    addr: SocketAddr,
    endpoint: Endpoint,
    services: Arc<LocalServices>,
    registry: Registry,
    links: DashMap<SocketAddr, Link>,
    routes: resolve::Routes,
    outbox: Outbox,
    /// Delivery ids for at-least-once events.
    next_delivery: AtomicU64,
    /// Turns queue-group picks: each publish goes to the next member.
    rotation: AtomicU64,
    max_event: usize,
    counters: Counters,
    cancel: CancellationToken,
    this: Weak<Broker>,
}

impl Broker {
    pub(crate) fn new(
        node: String,
        addr: SocketAddr,
        endpoint: Endpoint,
        services: Arc<LocalServices>,
        registry: Registry,
    ) -> Arc<Self> {
        let max_event = MAX_EVENT.min(
            endpoint
                .config()
                .max_frame
                .saturating_sub(frame::HEADER_ROOM),
        );
        let broker = Arc::new_cyclic(|this| Self {
            node,
            addr,
            endpoint,
            services,
            registry,
            links: DashMap::new(),
            routes: resolve::Routes::default(),
            outbox: Outbox::default(),
            next_delivery: AtomicU64::new(1),
            // From a random turn: short-lived publishers (one `colony publish` each) would
            // otherwise all pick a group's first member.
            rotation: AtomicU64::new(colony_actors::selector::random_below(1 << 20) as u64),
            max_event,
            counters: Counters::default(),
            cancel: CancellationToken::new(),
            this: this.clone(),
        });
        tokio::spawn(outbox_loop(broker.clone(), broker.cancel.clone()));
        broker
    }

    /// Where this node's subscriptions send their acknowledgements.
    pub(crate) fn acks(&self) -> Arc<dyn AckSink> {
        Arc::new(Acks(self.this.clone()))
    }

    /// The link to `addr`, started on first use.
    fn link(&self, addr: SocketAddr) -> Link {
        if let Some(link) = self.links.get(&addr) {
            return link.clone();
        }
        self.links
            .entry(addr)
            .or_insert_with(|| {
                Link::start(
                    self.endpoint.clone(),
                    addr,
                    self.node.clone(),
                    self.counters.lost.clone(),
                    self.cancel.clone(),
                )
            })
            .clone()
    }

    /// The gossip view changed: nodes that left take their links and in-flight attempts with
    /// them (the attempts are retried elsewhere).
    pub(crate) fn view_changed(&self, before: &ClusterView, now: &ClusterView) {
        for gone in now.departed_since(before) {
            self.links.remove(&gone);
            for due in self.outbox.node_gone(gone) {
                self.act(due);
            }
        }
    }

    /// Answers attempt `to` of an at-least-once delivery.
    fn answer(&self, to: AckTo, outcome: Result<(), String>) {
        match to.origin {
            None => {
                if let Some(due) = self.outbox.answered(to.id, to.attempt, outcome) {
                    self.act(due);
                }
            }
            Some(origin) => self.link(origin).send_ack(frame::WireAck {
                id: to.id,
                attempt: to.attempt,
                error: outcome.err(),
            }),
        }
    }

    /// Carries out what the outbox decided, on tasks of their own (a resend may wait for
    /// room in a subscriber's buffer).
    fn act(&self, due: Due) {
        let Some(broker) = self.this.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            match due {
                Due::Resend { id } => broker.resend(id).await,
                Due::DeadLetter { tracked, attempts } => {
                    broker.dead_letter(*tracked, attempts).await
                }
            }
        });
    }

    /// Waits until links have written what was queued and the outbox is empty.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let unsent: usize = self
                .links
                .iter()
                .map(|l| l.unsent.load(Ordering::Acquire))
                .sum();
            let unacked = self.outbox.len();
            if unsent == 0 && unacked == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::client(
                    Code::Timeout,
                    format!("flush: {unsent} frames unsent, {unacked} at-least-once deliveries unacknowledged"),
                ));
            }
            // Rare (publishers about to exit, shutdown): a short poll beats wiring a wake-up
            // through every link and the outbox.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops links and the outbox task (node shutdown).
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
        self.links.clear();
    }

    /// Its counters, for the node's health.
    pub(crate) fn health(&self) -> BrokerHealth {
        BrokerHealth {
            unacknowledged: self.outbox.len() as u64,
            unrouted: self.counters.unrouted.load(Ordering::Relaxed),
            malformed_frames: self.counters.malformed.load(Ordering::Relaxed),
            lost_frames: self.counters.lost.load(Ordering::Relaxed) as u64,
        }
    }
}

struct Acks(Weak<Broker>);

impl AckSink for Acks {
    fn ack(&self, to: AckTo, outcome: Result<(), String>) {
        if let Some(broker) = self.0.upgrade() {
            broker.answer(to, outcome);
        }
    }
}

/// Retries after their backoff, ack deadlines: the outbox's clock.
/// Holds the broker until the node stops it (`cancel`).
async fn outbox_loop(b: Arc<Broker>, cancel: CancellationToken) {
    loop {
        let wake = b.outbox.wake.notified();
        for due in b.outbox.due(Instant::now()) {
            b.act(due);
        }
        let next = b.outbox.next_due();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake => {}
            _ = sleep => {}
        }
    }
}
