//! At-least-once delivery: which messages wait for an ack, and what happens when one does not
//! come (redeliver after a backoff, or give up to the dead-letter topic).
//!
//! Plain state with the clock passed in: the topic actor calls [`InFlight::sent`] when it hands
//! a message to a subscriber, [`InFlight::acked`] on the handler's `Ok`, [`InFlight::failed`] on
//! its `Err`, a panic or the subscriber's node leaving, and [`InFlight::expired`] on its timer.
//! Acks and failures name the attempt they answer (the number `sent` returned): a late answer
//! from an attempt already given up on changes nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::restart::equal_jitter;

/// How long a subscriber has to acknowledge, how often a message is tried, and how long
/// between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redelivery {
    /// A handler that has not answered by then has failed this attempt (default 30 s).
    pub ack_wait: Duration,
    /// Attempts in all before the message goes to the dead-letter topic (default 5).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles for each one after, with equal jitter (100 ms).
    pub backoff: Duration,
    /// Longest wait between attempts (default 10 s).
    pub max_backoff: Duration,
}

impl Default for Redelivery {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// What to do with a message whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after `after` (attempt number `attempt`, counting from 1).
    After {
        /// The attempt to come.
        attempt: u32,
        /// The backoff before it.
        after: Duration,
    },
    /// Every attempt failed: publish it to the dead-letter topic.
    DeadLetter {
        /// Attempts made.
        attempts: u32,
    },
}

#[derive(Debug)]
struct Pending {
    attempts: u32,
    /// `None` while it waits for its next attempt.
    ack_by: Option<Instant>,
}

/// Messages handed to subscribers and not yet acknowledged, by message id.
#[derive(Debug)]
pub struct InFlight<K> {
    policy: Redelivery,
    pending: HashMap<K, Pending>,
}

impl<K: Clone + Eq + Hash> InFlight<K> {
    /// Nothing in flight yet.
    pub fn new(policy: Redelivery) -> Self {
        Self {
            policy,
            pending: HashMap::new(),
        }
    }

    /// Message `id` was handed to a subscriber at `now` (a first attempt, or a redelivery): its
    /// ack is due `ack_wait` later. Returns the attempt number.
    pub fn sent(&mut self, id: K, now: Instant) -> u32 {
        let ack_by = Some(now + self.policy.ack_wait);
        let pending = self.pending.entry(id).or_insert(Pending {
            attempts: 0,
            ack_by,
        });
        pending.attempts += 1;
        pending.ack_by = ack_by;
        pending.attempts
    }

    /// Attempt `attempt` of `id` answered `Ok`: the message is done. False if that is not the
    /// attempt in flight (a late ack of one already given up on, or of a finished message).
    pub fn acked(&mut self, id: &K, attempt: u32) -> bool {
        if !self.is_current(id, attempt) {
            return false;
        }
        self.pending.remove(id).is_some()
    }

    /// Attempt `attempt` of `id` failed (the handler's `Err`, a panic, the subscriber's node
    /// gone): retry or give up. `None` if that is not the attempt in flight.
    pub fn failed(&mut self, id: &K, attempt: u32) -> Option<Retry> {
        if !self.is_current(id, attempt) {
            return None;
        }
        self.fail(id)
    }

    /// Fails the attempt of `id` in flight now, whichever it is (its subscriber's node is
    /// gone); `None` if none is (it waits for a retry, or is done).
    pub fn fail_current(&mut self, id: &K) -> Option<Retry> {
        self.pending.get(id)?.ack_by?;
        self.fail(id)
    }

    /// True if `attempt` of `id` is in flight now (sent, its ack not yet due or failed).
    fn is_current(&self, id: &K, attempt: u32) -> bool {
        self.pending
            .get(id)
            .is_some_and(|p| p.attempts == attempt && p.ack_by.is_some())
    }

    fn fail(&mut self, id: &K) -> Option<Retry> {
        let attempts = self.pending.get(id)?.attempts;
        if attempts >= self.policy.max_attempts {
            self.pending.remove(id);
            return Some(Retry::DeadLetter { attempts });
        }
        // Not due while it waits for the next attempt: `sent` sets the next deadline.
        if let Some(pending) = self.pending.get_mut(id) {
            pending.ack_by = None;
        }
        let after = equal_jitter(
            self.policy.backoff,
            attempts.saturating_sub(1),
            self.policy.max_backoff,
        );
        Some(Retry::After {
            attempt: attempts + 1,
            after,
        })
    }

    /// Attempts whose ack is overdue at `now`, each failed as by [`failed`](Self::failed). The
    /// owner redelivers each after its backoff by calling [`sent`](Self::sent) again.
    pub fn expired(&mut self, now: Instant) -> Vec<(K, Retry)> {
        let overdue: Vec<K> = self
            .pending
            .iter()
            .filter(|(_, p)| p.ack_by.is_some_and(|due| due <= now))
            .map(|(id, _)| id.clone())
            .collect();
        overdue
            .into_iter()
            .filter_map(|id| self.fail(&id).map(|retry| (id, retry)))
            .collect()
    }

    /// When the next ack falls due, for the owner's timer.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| p.ack_by).min()
    }

    /// Messages waiting for an ack or a retry.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if none is.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Redelivery {
        Redelivery {
            ack_wait: Duration::from_secs(1),
            max_attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }

    #[test]
    fn an_ack_ends_it_and_a_late_ack_is_ignored() {
        let mut f = InFlight::new(policy());
        let t = Instant::now();
        assert_eq!(f.sent(7u64, t), 1);
        assert!(f.acked(&7, 1));
        assert!(!f.acked(&7, 1));
        assert!(f.is_empty());
        assert_eq!(f.failed(&7, 1), None);
    }

    #[test]
    fn failures_retry_with_growing_backoff_then_dead_letter() {
        let mut f = InFlight::new(policy());
        let t = Instant::now();
        f.sent(1u64, t);
        let Some(Retry::After { attempt: 2, after }) = f.failed(&1, 1) else {
            panic!("a retry")
        };
        assert!(after >= Duration::from_millis(50) && after <= Duration::from_millis(100));
        assert_eq!(f.sent(1, t + after), 2);
        let Some(Retry::After { attempt: 3, after }) = f.failed(&1, 2) else {
            panic!("a retry")
        };
        assert!(after >= Duration::from_millis(100) && after <= Duration::from_millis(200));
        f.sent(1, t);
        assert_eq!(f.failed(&1, 3), Some(Retry::DeadLetter { attempts: 3 }));
        assert!(f.is_empty(), "a dead letter is no longer in flight");
    }

    #[test]
    fn an_overdue_ack_fails_the_attempt() {
        let mut f = InFlight::new(policy());
        let t = Instant::now();
        f.sent(1u64, t);
        f.sent(2u64, t + Duration::from_millis(500));
        assert_eq!(f.next_due(), Some(t + Duration::from_secs(1)));
        assert!(f.expired(t + Duration::from_millis(999)).is_empty());
        let overdue = f.expired(t + Duration::from_secs(1));
        assert_eq!(overdue.len(), 1);
        assert!(matches!(overdue[0], (1, Retry::After { attempt: 2, .. })));
        assert_eq!(f.next_due(), Some(t + Duration::from_millis(1500)));
    }

    #[test]
    fn late_answers_from_an_attempt_given_up_on_change_nothing() {
        let mut f = InFlight::new(policy());
        let t = Instant::now();
        f.sent(1u64, t);
        // Attempt 1 overdue: a retry is scheduled.
        assert_eq!(f.expired(t + Duration::from_secs(1)).len(), 1);
        // Its handler then fails, or succeeds, late: no second retry, no early dead letter,
        // and the message stays in flight for attempt 2.
        assert_eq!(f.failed(&1, 1), None);
        assert!(!f.acked(&1, 1));
        assert_eq!(f.len(), 1);
        assert_eq!(f.sent(1, t + Duration::from_secs(2)), 2);
        assert_eq!(
            f.failed(&1, 1),
            None,
            "attempt 1's failure is not attempt 2's"
        );
        assert!(f.acked(&1, 2));
        assert!(f.is_empty());
    }
}
