//! A node's call defaults: strategy, retries, backoff, ejection and the retry budget.

use std::time::Duration;

use colony_actors::selector::{BudgetPolicy, OutlierPolicy, Strategy};

/// How this node's clients call services unless a call says otherwise
/// ([`NodeBuilder::client_defaults`](crate::NodeBuilder::client_defaults)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallDefaults {
    /// Deadline of a call, all attempts included (default 30 s, as go-micro).
    pub timeout: Duration,
    /// How an instance is chosen (default power of two choices on latency).
    pub strategy: Strategy,
    /// Further attempts after a failed one (default 2). A call that provably never reached a
    /// handler is retried on another instance; a delivered one only if the call is
    /// [`idempotent`](crate::Call::idempotent).
    pub retries: u32,
    /// Delay before the first retry; it doubles with each retry, with full jitter (default
    /// 5 ms, since a retry goes to another instance).
    pub backoff: Duration,
    /// Longest delay between retries (default 250 ms).
    pub max_backoff: Duration,
    /// Shortest per-attempt timeout of an idempotent call (default 50 ms). An idempotent
    /// attempt gets `srtt + 4·rttvar` of its instance (TCP's retransmission timeout), at least
    /// this, before it is abandoned for another instance; a silently dead node then costs one
    /// such wait instead of the whole deadline. An attempt is cut only when another can follow it
    /// (another instance, retries and retry budget left).
    pub min_attempt_timeout: Duration,
    /// Shortest wait before a hedged call sends its second attempt (default 5 ms); the wait is
    /// the first instance's `srtt + 2·rttvar` (about its 95th percentile) when longer.
    pub min_hedge_delay: Duration,
    /// When failing instances are ejected, and for how long.
    pub outliers: OutlierPolicy,
    /// How many retries and hedges may add to the calls made.
    pub retry_budget: BudgetPolicy,
}

impl Default for CallDefaults {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            strategy: Strategy::default(),
            retries: 2,
            backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(250),
            min_attempt_timeout: Duration::from_millis(50),
            min_hedge_delay: Duration::from_millis(5),
            outliers: OutlierPolicy::default(),
            retry_budget: BudgetPolicy::default(),
        }
    }
}
