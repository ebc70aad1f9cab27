//! At-least-once on the publisher's node: every event handed to an at-least-once subscription
//! waits here until its handler's `Ok` comes back.
//!
//! The publisher's node is the one place that outlives a subscriber's crash, so it is where an
//! unacknowledged event lives: in this process's memory, nowhere else. A failed attempt (the
//! handler's `Err`, a panic, the ack deadline, the subscriber's node leaving) is retried after
//! a backoff, to another member when the subscription is in a queue group; after the last
//! attempt the event goes to the dead-letter subject. If the publisher's process dies, what it
//! holds here is lost (see docs/pubsub.md).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use colony_actors::broker::{InFlight, Redelivery, Retry, Subject};
use tokio::sync::Notify;

use super::event::Payload;
use crate::context::Metadata;
use crate::error::{Code, Error};

/// Where an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sent {
    /// A subscription on this node.
    Local { id: u64 },
    /// A subscription on another node.
    Remote { addr: SocketAddr, id: u64 },
    /// Nowhere: no subscriber could be found for this attempt.
    Nowhere,
}

/// One event for one at-least-once subscription (or queue group), until acknowledged.
pub(crate) struct Tracked {
    pub(crate) subject: Subject,
    pub(crate) payload: Payload,
    pub(crate) metadata: Metadata,
    pub(crate) policy: Redelivery,
    /// The queue group: a redelivery may go to any member.
    pub(crate) group: Option<Arc<str>>,
    /// The subscription's identity across its node's restarts, for plain subscriptions: a
    /// redelivery goes to the same node, service and pattern.
    pub(crate) node: Arc<str>,
    pub(crate) service: Arc<str>,
    pub(crate) pattern: Arc<str>,
    pub(crate) dead_letter: Option<Subject>,
    pub(crate) sent: Sent,
    pub(crate) last_error: String,
}

/// What the outbox asks the broker to do.
pub(crate) enum Due {
    /// Send delivery `id` again (its next attempt).
    Resend { id: u64 },
    /// Every attempt failed: publish a dead letter.
    DeadLetter {
        tracked: Box<Tracked>,
        attempts: u32,
    },
}

#[derive(Default)]
struct State {
    /// One per redelivery policy (subscriptions choose theirs).
    inflight: HashMap<Redelivery, InFlight<u64>>,
    tracked: HashMap<u64, Tracked>,
    /// Retries waiting for their backoff: (when, id, attempt).
    retries: BTreeSet<(Instant, u64, u32)>,
    /// When the outbox task means to look next: a new ack deadline earlier than that wakes it.
    planned: Option<Instant>,
}

/// At-least-once deliveries a node keeps unacknowledged at most: past it, publishes wait
/// (within their deadline), so a publisher that outruns its subscribers' acks is slowed
/// rather than growing this without bound.
pub(crate) const MAX_UNACKED: usize = 64 * 1024;

/// Unacknowledged at-least-once deliveries of this node's publishes.
#[derive(Default)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the outbox task: a retry was scheduled, or an ack deadline set.
    pub(crate) wake: Notify,
    /// Wakes publishers waiting for room.
    room: Notify,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more deliveries fit under [`MAX_UNACKED`], or `deadline`.
    pub(crate) async fn room(&self, n: usize, deadline: Instant) -> Result<(), Error> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let unacked = self.len();
            if unacked + n <= MAX_UNACKED || unacked == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline.into(), room)
                .await
                .is_err()
            {
                return Err(Error::client(
                    Code::Timeout,
                    format!("{unacked} at-least-once deliveries wait for acknowledgements: the publisher is ahead of its subscribers"),
                ));
            }
        }
    }

    /// Starts tracking delivery `id`; returns its first attempt number (1).
    pub(crate) fn track(&self, id: u64, tracked: Tracked) -> u32 {
        let mut state = self.lock();
        let policy = tracked.policy;
        state.tracked.insert(id, tracked);
        let now = Instant::now();
        let attempt = state
            .inflight
            .entry(policy)
            .or_insert_with(|| InFlight::new(policy))
            .sent(id, now);
        let wake = state.planned.is_none_or(|at| now + policy.ack_wait < at);
        if wake {
            state.planned = Some(now + policy.ack_wait);
        }
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        attempt
    }

    /// A delivery is done (acknowledged or dead-lettered): a waiting publisher may go on.
    fn removed(&self, state: &State) {
        if state.tracked.len() + 1 == MAX_UNACKED || state.tracked.is_empty() {
            self.room.notify_waiters();
        }
    }

    /// Attempt `attempt` of `id` went to `sent` (a redelivery); returns the attempt number the
    /// subscriber must answer, or `None` if the delivery is no longer tracked.
    pub(crate) fn resent(&self, id: u64, sent: Sent) -> Option<(u32, TrackedView)> {
        let mut state = self.lock();
        let State {
            inflight, tracked, ..
        } = &mut *state;
        let t = tracked.get_mut(&id)?;
        t.sent = sent;
        let attempt = inflight
            .get_mut(&t.policy)
            .map(|f| f.sent(id, Instant::now()))?;
        let view = TrackedView::of(t);
        drop(state);
        self.wake.notify_one();
        Some((attempt, view))
    }

    /// What a redelivery needs to know of `id`.
    pub(crate) fn view(&self, id: u64) -> Option<TrackedView> {
        self.lock().tracked.get(&id).map(TrackedView::of)
    }

    /// The subscriber answered attempt `attempt` of `id`. Returns a dead letter to publish
    /// when that was the last attempt.
    pub(crate) fn answered(
        &self,
        id: u64,
        attempt: u32,
        outcome: Result<(), String>,
    ) -> Option<Due> {
        let mut state = self.lock();
        let policy = state.tracked.get(&id)?.policy;
        let inflight = state.inflight.get_mut(&policy)?;
        match outcome {
            Ok(()) => {
                if inflight.acked(&id, attempt) {
                    state.tracked.remove(&id);
                    self.removed(&state);
                }
                None
            }
            Err(error) => {
                let retry = inflight.failed(&id, attempt)?;
                if let Some(t) = state.tracked.get_mut(&id) {
                    t.last_error = error;
                }
                let due = Self::schedule(&mut state, id, retry);
                self.removed(&state);
                drop(state);
                self.wake.notify_one();
                due
            }
        }
    }

    fn schedule(state: &mut State, id: u64, retry: Retry) -> Option<Due> {
        match retry {
            Retry::After { attempt, after } => {
                state.retries.insert((Instant::now() + after, id, attempt));
                None
            }
            Retry::DeadLetter { attempts } => {
                let tracked = state.tracked.remove(&id)?;
                Some(Due::DeadLetter {
                    tracked: Box::new(tracked),
                    attempts,
                })
            }
        }
    }

    /// Fails every attempt in flight to `addr` (its node left or died).
    pub(crate) fn node_gone(&self, addr: SocketAddr) -> Vec<Due> {
        let mut state = self.lock();
        let gone: Vec<u64> = state
            .tracked
            .iter()
            .filter(|(_, t)| matches!(t.sent, Sent::Remote { addr: a, .. } if a == addr))
            .map(|(id, _)| *id)
            .collect();
        let mut due = Vec::new();
        for id in gone {
            let Some(t) = state.tracked.get_mut(&id) else {
                continue;
            };
            t.last_error = format!("the subscriber's node {addr} left or died");
            t.sent = Sent::Nowhere;
            let policy = t.policy;
            // Only an attempt in flight fails here; one waiting for its retry keeps its time.
            let retry = state
                .inflight
                .get_mut(&policy)
                .and_then(|f| f.fail_current(&id));
            if let Some(retry) = retry {
                due.extend(Self::schedule(&mut state, id, retry));
            }
        }
        self.removed(&state);
        drop(state);
        self.wake.notify_one();
        due
    }

    /// Retries whose backoff has passed and attempts whose ack deadline has, at `now`.
    pub(crate) fn due(&self, now: Instant) -> Vec<Due> {
        let mut state = self.lock();
        let mut due = Vec::new();
        let expired: Vec<(u64, Retry)> = state
            .inflight
            .values_mut()
            .flat_map(|f| f.expired(now))
            .collect();
        for (id, retry) in expired {
            if let Some(t) = state.tracked.get_mut(&id) {
                t.last_error = "no acknowledgement before the ack deadline".into();
            }
            due.extend(Self::schedule(&mut state, id, retry));
        }
        while let Some(&(at, id, attempt)) = state.retries.first() {
            if at > now {
                break;
            }
            state.retries.pop_first();
            // A retry scheduled for an attempt since overtaken (acked meanwhile) finds
            // nothing to do: `resent` counts attempts itself.
            let _ = attempt;
            if state.tracked.contains_key(&id) {
                due.push(Due::Resend { id });
            }
        }
        self.removed(&state);
        due
    }

    /// When the outbox task should look again (and remembers it, see `track`).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let mut state = self.lock();
        let retry = state.retries.first().map(|(at, _, _)| *at);
        let ack = state.inflight.values().filter_map(InFlight::next_due).min();
        state.planned = retry.into_iter().chain(ack).min();
        state.planned
    }

    /// Deliveries not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.lock().tracked.len()
    }
}

/// A copy of what a redelivery needs, taken out of the lock.
pub(crate) struct TrackedView {
    pub(crate) subject: Subject,
    pub(crate) payload: Payload,
    pub(crate) metadata: Metadata,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) node: Arc<str>,
    pub(crate) service: Arc<str>,
    pub(crate) pattern: Arc<str>,
    pub(crate) sent: Sent,
}

impl TrackedView {
    fn of(t: &Tracked) -> Self {
        Self {
            subject: t.subject.clone(),
            payload: t.payload.clone(),
            metadata: t.metadata.clone(),
            group: t.group.clone(),
            node: t.node.clone(),
            service: t.service.clone(),
            pattern: t.pattern.clone(),
            sent: t.sent.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tracked(sent: Sent, max_attempts: u32) -> Tracked {
        Tracked {
            subject: Subject::new("orders.created").unwrap(),
            payload: Payload::Encoded {
                content_type: crate::codec::ContentType::Json,
                body: bytes::Bytes::from_static(b"{}"),
            },
            metadata: Metadata::default(),
            policy: Redelivery {
                ack_wait: Duration::from_secs(30),
                max_attempts,
                backoff: Duration::ZERO,
                max_backoff: Duration::ZERO,
            },
            group: None,
            node: "b".into(),
            service: "billing".into(),
            pattern: "orders.*".into(),
            dead_letter: Some(Subject::new("colony.dead.billing").unwrap()),
            sent,
            last_error: String::new(),
        }
    }

    fn remote(port: u16) -> Sent {
        Sent::Remote {
            addr: ([127, 0, 0, 1], port).into(),
            id: 1,
        }
    }

    #[test]
    fn an_ack_of_the_current_attempt_ends_the_delivery_and_a_late_one_changes_nothing() {
        let outbox = Outbox::default();
        assert_eq!(outbox.track(1, tracked(remote(7000), 3)), 1);
        assert!(outbox.answered(1, 2, Ok(())).is_none());
        assert_eq!(outbox.len(), 1, "an ack for an attempt not sent is ignored");
        assert!(outbox.answered(1, 1, Ok(())).is_none());
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn failures_are_retried_then_dead_lettered_with_the_last_error() {
        let outbox = Outbox::default();
        outbox.track(1, tracked(Sent::Local { id: 9 }, 2));
        assert!(outbox.answered(1, 1, Err("boom".into())).is_none());
        let due = outbox.due(Instant::now() + Duration::from_millis(1));
        assert!(matches!(due.as_slice(), [Due::Resend { id: 1 }]));
        let (attempt, _) = outbox.resent(1, Sent::Local { id: 9 }).unwrap();
        assert_eq!(attempt, 2);
        match outbox.answered(1, 2, Err("boom again".into())) {
            Some(Due::DeadLetter { tracked, attempts }) => {
                assert_eq!(attempts, 2);
                assert_eq!(tracked.last_error, "boom again");
            }
            _ => panic!("the last failed attempt dead-letters"),
        }
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_node_leaving_fails_only_the_attempts_in_flight_to_it() {
        let outbox = Outbox::default();
        outbox.track(1, tracked(remote(7000), 5));
        outbox.track(2, tracked(remote(7001), 5));
        assert!(outbox.node_gone(([127, 0, 0, 1], 7000).into()).is_empty());
        let due = outbox.due(Instant::now() + Duration::from_millis(1));
        assert!(
            matches!(due.as_slice(), [Due::Resend { id: 1 }]),
            "only the delivery to the gone node is resent"
        );
        assert_eq!(outbox.view(1).unwrap().sent, Sent::Nowhere);
        assert_eq!(outbox.view(2).unwrap().sent, remote(7001));
    }

    #[test]
    fn an_overdue_ack_fails_the_attempt() {
        let outbox = Outbox::default();
        outbox.track(1, tracked(remote(7000), 5));
        assert!(outbox.due(Instant::now()).is_empty(), "not overdue yet");
        let later = Instant::now() + Duration::from_secs(31);
        // No backoff in this policy: the retry is due as soon as the attempt has failed.
        assert!(matches!(
            outbox.due(later).as_slice(),
            [Due::Resend { id: 1 }]
        ));
        assert!(
            outbox.next_due().is_none(),
            "nothing in flight until it is resent"
        );
    }
}
