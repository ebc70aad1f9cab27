//! How a supervisor reacts to a failed child, and how often it may: plain decisions, no actors.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::selector::random_unit;

/// Which children a supervisor restarts when one exits and is to be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RestartStrategy {
    /// Restart only the child that exited (OTP's `one_for_one`).
    #[default]
    OneForOne,
    /// Stop every other child and restart them all (OTP's `one_for_all`): for instances that
    /// only make sense together.
    OneForAll,
    /// Stop the children started after it and restart it and them, in order (OTP's
    /// `rest_for_one`).
    RestForOne,
}

/// Whether a child that exited is restarted at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ChildPolicy {
    /// Always restarted, after a failure or a normal stop.
    #[default]
    Permanent,
    /// Restarted only after a failure (a panic), not after a normal stop.
    Transient,
    /// Never restarted.
    Temporary,
}

/// A supervisor restarts exited children until more than `max_restarts` happen within
/// `within`; then it gives up and stops, like OTP's intensity and period. Restarts wait an
/// exponential backoff, from `backoff` up to `max_backoff`, growing with the restarts already
/// in the window, so a crash loop does not spin. The wait is jittered between half the backoff
/// and all of it ("equal jitter"): instances that fail together do not restart in lockstep, yet
/// until the cap each wait is at least as long as the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Which children restart.
    pub strategy: RestartStrategy,
    /// Whether an exited child restarts at all.
    pub child: ChildPolicy,
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
    /// Longest wait before the first restart in a quiet window (default 10 ms).
    pub backoff: Duration,
    /// Longest wait before any restart (default 5 s).
    pub max_backoff: Duration,
    /// How long an instance's `started` hook may take (default 30 s); past it the start fails,
    /// like a hook that returned an error, so a hung dependency cannot hold the supervisor.
    pub start_timeout: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            strategy: RestartStrategy::OneForOne,
            child: ChildPolicy::Permanent,
            max_restarts: 10,
            within: Duration::from_secs(60),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
            start_timeout: Duration::from_secs(30),
        }
    }
}

impl RestartPolicy {
    /// The slots to restart, in order, when the child in `slot` of `count` exits (`failed`: it
    /// panicked or failed to start, rather than stopping normally). Empty: restart nothing.
    pub(crate) fn slots_to_restart(&self, slot: usize, count: usize, failed: bool) -> Vec<usize> {
        let restart = match self.child {
            ChildPolicy::Permanent => true,
            ChildPolicy::Transient => failed,
            ChildPolicy::Temporary => false,
        };
        if !restart {
            return Vec::new();
        }
        match self.strategy {
            RestartStrategy::OneForOne => vec![slot],
            RestartStrategy::OneForAll => (0..count).collect(),
            RestartStrategy::RestForOne => (slot..count).collect(),
        }
    }
}

/// Restarts recently spent, kept to decide whether one more is allowed and how long it waits.
#[derive(Debug, Default)]
pub(crate) struct RestartBudget {
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// Records a restart at `now` if the policy allows it; returns how long to wait before it:
    /// between half and all of `backoff · 2^(restarts already in the window)`, capped.
    pub(crate) fn try_spend(&mut self, policy: &RestartPolicy, now: Instant) -> Option<Duration> {
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) > policy.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= policy.max_restarts {
            return None;
        }
        let wait = equal_jitter(policy.backoff, self.recent.len() as u32, policy.max_backoff);
        self.recent.push_back(now);
        Some(wait)
    }
}

/// An exponential backoff with equal jitter: between half and all of `base · 2^doublings`,
/// capped at `max`. Waits grow until the cap, yet two parties that fail together do not retry
/// in lockstep.
pub(crate) fn equal_jitter(base: Duration, doublings: u32, max: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << doublings.min(16)).min(max);
    ceiling / 2 + (ceiling / 2).mul_f64(random_unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_the_limit_and_recovers_after_the_window() {
        let policy = RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let mut budget = RestartBudget::default();
        let t0 = Instant::now();
        assert!(budget.try_spend(&policy, t0).is_some());
        assert!(budget
            .try_spend(&policy, t0 + Duration::from_secs(1))
            .is_some());
        assert!(budget
            .try_spend(&policy, t0 + Duration::from_secs(2))
            .is_none());
        assert!(budget
            .try_spend(&policy, t0 + Duration::from_secs(12))
            .is_some());
    }

    #[test]
    fn restarts_back_off_exponentially_up_to_the_cap() {
        let policy = RestartPolicy {
            max_restarts: 100,
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            ..RestartPolicy::default()
        };
        let mut budget = RestartBudget::default();
        let t = Instant::now();
        let mut previous = Duration::ZERO;
        for n in 0..8u32 {
            let wait = budget.try_spend(&policy, t).unwrap();
            let ceiling = Duration::from_millis(10 * (1 << n)).min(Duration::from_millis(100));
            assert!(wait <= ceiling, "restart {n}: {wait:?} > {ceiling:?}");
            assert!(
                wait >= ceiling / 2,
                "restart {n}: {wait:?} < half of {ceiling:?}"
            );
            if ceiling < policy.max_backoff {
                assert!(
                    wait >= previous,
                    "restart {n}: {wait:?} < {previous:?} before the cap"
                );
            }
            previous = wait;
        }
    }

    #[test]
    fn strategies_and_child_policies_choose_the_slots() {
        let with = |strategy, child| RestartPolicy {
            strategy,
            child,
            ..RestartPolicy::default()
        };
        use ChildPolicy::*;
        use RestartStrategy::*;
        assert_eq!(
            with(OneForOne, Permanent).slots_to_restart(1, 4, false),
            vec![1]
        );
        assert_eq!(
            with(OneForAll, Permanent).slots_to_restart(1, 4, true),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            with(RestForOne, Permanent).slots_to_restart(1, 4, true),
            vec![1, 2, 3]
        );
        assert_eq!(
            with(OneForOne, Transient).slots_to_restart(1, 4, true),
            vec![1]
        );
        assert!(with(OneForOne, Transient)
            .slots_to_restart(1, 4, false)
            .is_empty());
        assert!(with(OneForAll, Temporary)
            .slots_to_restart(1, 4, true)
            .is_empty());
    }
}
