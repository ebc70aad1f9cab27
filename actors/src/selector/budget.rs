//! The retry budget: retries stay a fraction of calls, so failures never become a retry storm.
//!
//! Finagle's and Envoy's rule: over a sliding window, retries (and hedges) may add at most
//! `ratio` of the calls made, plus a small floor per window so that a quiet client can still
//! retry. The window is two fixed halves: the previous half's counts weigh in until the current
//! one fills, which is enough precision for a budget. Calls are counted on every call, so
//! counting reads no clock: the current half is advanced by [`RetryBudget::tick`] (the selector
//! actor's timer) and by retries, which are rare and read the time anyway.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How many retries a client may add.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPolicy {
    /// Retries allowed per call made (default 0.2: at most 20% extra load).
    pub ratio: f64,
    /// Retries always allowed per window, whatever the call count (default 10).
    pub floor: u32,
    /// The window (default 10 s).
    pub window: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            floor: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Calls and retries of one service, counted per half window. Lock-free.
#[derive(Debug)]
pub struct RetryBudget {
    policy: BudgetPolicy,
    origin: Instant,
    /// `[epoch of slot, calls, retries]` for two slots, epoch = half windows since `origin`.
    slots: [[AtomicU64; 3]; 2],
    /// The epoch as of the last tick or retry.
    current: AtomicU64,
}

impl RetryBudget {
    /// A budget under `policy`, starting now.
    pub fn new(policy: BudgetPolicy, now: Instant) -> Self {
        Self {
            policy,
            origin: now,
            slots: Default::default(),
            current: AtomicU64::new(1),
        }
    }

    /// Advances the budget's clock to `now`.
    pub fn tick(&self, now: Instant) {
        self.current.fetch_max(self.epoch(now), Relaxed);
    }

    fn epoch(&self, now: Instant) -> u64 {
        // Milliseconds in u64: a u128 division would cost more than the rest of a deposit.
        let half = (self.policy.window.as_millis() as u64 / 2).max(1);
        now.saturating_duration_since(self.origin).as_millis() as u64 / half + 1
    }

    /// The slot of `epoch`, cleared if it last held an older epoch. Racing rotations may lose
    /// a count or two, which a budget can afford.
    fn slot(&self, epoch: u64) -> &[AtomicU64; 3] {
        let slot = &self.slots[(epoch % 2) as usize];
        let seen = slot[0].load(Relaxed);
        if seen != epoch
            && slot[0]
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            slot[1].store(0, Relaxed);
            slot[2].store(0, Relaxed);
        }
        slot
    }

    fn totals(&self, epoch: u64) -> (u64, u64) {
        let mut calls = 0;
        let mut retries = 0;
        for slot in &self.slots {
            let e = slot[0].load(Relaxed);
            if e == epoch || e + 1 == epoch {
                calls += slot[1].load(Relaxed);
                retries += slot[2].load(Relaxed);
            }
        }
        (calls, retries)
    }

    /// Counts one call made (in the half window of the last tick).
    pub fn deposit(&self) {
        self.slot(self.current.load(Relaxed))[1].fetch_add(1, Relaxed);
    }

    /// Whether a retry would be granted now (as of the last tick), without taking it.
    pub fn available(&self) -> bool {
        let (calls, retries) = self.totals(self.current.load(Relaxed));
        (retries as f64) + 1.0 <= f64::from(self.policy.floor) + self.policy.ratio * calls as f64
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        self.tick(now);
        let epoch = self.epoch(now);
        let (calls, retries) = self.totals(epoch);
        let allowed = f64::from(self.policy.floor) + self.policy.ratio * calls as f64;
        if (retries as f64) + 1.0 > allowed {
            return false;
        }
        self.slot(epoch)[2].fetch_add(1, Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_at_the_floor_plus_the_ratio_of_calls() {
        let t = Instant::now();
        let budget = RetryBudget::new(BudgetPolicy::default(), t);
        for _ in 0..1_000 {
            budget.deposit();
        }
        let granted = (0..1_000).filter(|_| budget.try_withdraw(t)).count();
        assert_eq!(granted, 10 + 200);
    }

    #[test]
    fn the_floor_holds_without_calls_and_the_window_slides() {
        let t = Instant::now();
        let budget = RetryBudget::new(BudgetPolicy::default(), t);
        assert_eq!((0..100).filter(|_| budget.try_withdraw(t)).count(), 10);
        // Half a window later the spent retries still count...
        let later = t + Duration::from_secs(5);
        assert!(!budget.try_withdraw(later));
        // ...a whole window later they have slid out.
        let much_later = t + Duration::from_secs(11);
        assert_eq!(
            (0..100).filter(|_| budget.try_withdraw(much_later)).count(),
            10
        );
    }
}
