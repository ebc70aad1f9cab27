//! How a supervisor reacts to a failed child, and how often it may.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Which children a supervisor restarts when one fails.
///
/// Only one-for-one exists today; the enum is where one-for-all and rest-for-one will go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RestartStrategy {
    /// Restart only the child that failed (OTP's `one_for_one`).
    #[default]
    OneForOne,
}

/// A supervisor restarts failed children until more than `max_restarts` happen within
/// `within`; then it gives up and stops, like OTP's intensity and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Which children restart.
    pub strategy: RestartStrategy,
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            strategy: RestartStrategy::OneForOne,
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

/// Restarts recently spent, kept to decide whether one more is allowed.
#[derive(Debug, Default)]
pub(crate) struct RestartBudget {
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// Records a restart at `now` if the policy allows it.
    pub(crate) fn try_spend(&mut self, policy: &RestartPolicy, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.duration_since(oldest) > policy.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= policy.max_restarts {
            return false;
        }
        self.recent.push_back(now);
        true
    }
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
        assert!(budget.try_spend(&policy, t0));
        assert!(budget.try_spend(&policy, t0 + Duration::from_secs(1)));
        assert!(!budget.try_spend(&policy, t0 + Duration::from_secs(2)));
        assert!(budget.try_spend(&policy, t0 + Duration::from_secs(12)));
    }
}
