//! What the node does with a service that failed past its restart budget.

use std::time::Duration;

/// How the node-level supervisor treats a service whose own supervisor gave up (more restarts
/// than its [`RestartPolicy`](crate::RestartPolicy) allows). Either way the service is marked
/// failed and withdrawn from routing and gossip at once, and every other service keeps serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// Stay failed until restarted by hand ([`ServiceRef::restart`](crate::ServiceRef::restart)).
    Manual,
    /// Restart the whole service after a cool-down, so a crash loop needs no human. The
    /// cool-down doubles with each failure in a row, from `first` up to `max` (as Kubernetes'
    /// crash-loop back-off); a service that then serves for longer than `max` starts the next
    /// streak from `first` again.
    CoolDown {
        /// The first wait.
        first: Duration,
        /// The longest wait.
        max: Duration,
    },
}

impl Default for Recovery {
    /// Restart after 10 s, then 20 s, 40 s... up to 5 minutes.
    fn default() -> Self {
        Recovery::CoolDown {
            first: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl Recovery {
    /// The wait before restarting after the `streak`-th failure in a row (1 for the first);
    /// `None` for a manual restart.
    pub(crate) fn cool_down(&self, streak: u32) -> Option<Duration> {
        match *self {
            Recovery::Manual => None,
            Recovery::CoolDown { first, max } => {
                let doublings = streak.saturating_sub(1).min(20);
                Some(first.saturating_mul(1 << doublings).min(max))
            }
        }
    }

    /// How long a restarted service must serve before a new failure counts as a fresh streak.
    pub(crate) fn settled_after(&self) -> Duration {
        match *self {
            Recovery::Manual => Duration::ZERO,
            Recovery::CoolDown { max, .. } => max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cool_down_doubles_up_to_the_cap() {
        let r = Recovery::CoolDown {
            first: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let waits: Vec<_> = (1..=5).map(|n| r.cool_down(n).unwrap().as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
        assert_eq!(Recovery::Manual.cool_down(1), None);
    }
}
