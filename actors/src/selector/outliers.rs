//! Outlier ejection: the selector's decisions about failing instances, with no clock of its own.
//!
//! An instance that fails `consecutive_failures` times in a row is ejected for a period that
//! doubles with each ejection (up to `max_ejection`); when the period ends one probe call
//! decides: success brings it back, failure ejects it again for longer. An instance that stays
//! healthy for `max_ejection` has its ejection count forgotten. The last instance that could take
//! a call is never ejected: a call that might fail beats one that cannot be made.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When instances are ejected and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Failures in a row that eject an instance (default 5).
    pub consecutive_failures: u32,
    /// First ejection period; each further ejection doubles it (default 1 s).
    pub base_ejection: Duration,
    /// Longest ejection period (default 30 s).
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
        }
    }
}

/// What the selector should do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changes.
    Keep,
    /// Eject the instance until the given time, then probe it.
    Eject {
        /// When its probe may go out.
        until: Instant,
        /// How many times it has been ejected in a row, this one included.
        ejections: u32,
    },
    /// It should be ejected, but it is the last instance able to take calls.
    SpareLast,
    /// Its probe succeeded: it takes calls again.
    Restore,
}

#[derive(Debug, Default, Clone, Copy)]
struct Record {
    ejections: u32,
    ejected_until: Option<Instant>,
    healthy_since: Option<Instant>,
}

/// Ejection bookkeeping for the instances of one service.
#[derive(Debug, Default)]
pub struct Outliers {
    policy: OutlierPolicy,
    records: HashMap<String, Record>,
}

impl Outliers {
    /// Bookkeeping under `policy`.
    pub fn new(policy: OutlierPolicy) -> Self {
        Self {
            policy,
            records: HashMap::new(),
        }
    }

    /// An instance failed for the `run`th time in a row; `available` counts the instances that
    /// take calls now, this one included.
    pub fn failed(&mut self, id: &str, run: u32, available: usize, now: Instant) -> Verdict {
        let probing = self
            .records
            .get(id)
            .is_some_and(|r| r.ejected_until.is_some());
        if !probing && run < self.policy.consecutive_failures {
            return Verdict::Keep;
        }
        if !probing && available <= 1 {
            return Verdict::SpareLast;
        }
        let policy = self.policy;
        let record = self.records.entry(id.to_string()).or_default();
        if record
            .healthy_since
            .is_some_and(|since| now.duration_since(since) >= policy.max_ejection)
        {
            record.ejections = 0;
        }
        record.ejections += 1;
        record.healthy_since = None;
        let period = policy
            .base_ejection
            .saturating_mul(1u32 << (record.ejections - 1).min(16))
            .min(policy.max_ejection);
        let until = now + period;
        record.ejected_until = Some(until);
        Verdict::Eject {
            until,
            ejections: record.ejections,
        }
    }

    /// An instance answered. Only a probe's success changes anything.
    pub fn succeeded(&mut self, id: &str, now: Instant) -> Verdict {
        match self.records.get_mut(id) {
            Some(r) if r.ejected_until.is_some() => {
                r.ejected_until = None;
                r.healthy_since = Some(now);
                Verdict::Restore
            }
            _ => Verdict::Keep,
        }
    }

    /// When the instance's current ejection ends, if it is ejected.
    pub fn ejected_until(&self, id: &str) -> Option<Instant> {
        self.records.get(id).and_then(|r| r.ejected_until)
    }

    /// How many times in a row the instance has been ejected (0 once forgiven or never).
    pub fn ejections(&self, id: &str) -> u32 {
        self.records.get(id).map_or(0, |r| r.ejections)
    }

    /// Forgets instances that left the service.
    pub fn retain(&mut self, present: impl Fn(&str) -> bool) {
        self.records.retain(|id, _| present(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_run_of_failures_ejects_for_a_growing_period() {
        let mut o = Outliers::new(policy());
        let t = Instant::now();
        assert_eq!(o.failed("a", 1, 3, t), Verdict::Keep);
        assert_eq!(o.failed("a", 2, 3, t), Verdict::Keep);
        let first = o.failed("a", 3, 3, t);
        assert_eq!(
            first,
            Verdict::Eject {
                until: t + Duration::from_secs(1),
                ejections: 1
            }
        );
        // The probe fails: ejected again, twice as long, then capped.
        let t2 = t + Duration::from_secs(1);
        assert_eq!(
            o.failed("a", 4, 2, t2),
            Verdict::Eject {
                until: t2 + Duration::from_secs(2),
                ejections: 2
            }
        );
        assert_eq!(
            o.failed("a", 5, 2, t2),
            Verdict::Eject {
                until: t2 + Duration::from_secs(4),
                ejections: 3
            }
        );
        assert_eq!(
            o.failed("a", 6, 2, t2),
            Verdict::Eject {
                until: t2 + Duration::from_secs(5),
                ejections: 4
            }
        );
    }

    #[test]
    fn a_successful_probe_restores_and_a_long_healthy_spell_forgets() {
        let mut o = Outliers::new(policy());
        let t = Instant::now();
        assert!(matches!(o.failed("a", 3, 3, t), Verdict::Eject { .. }));
        assert_eq!(
            o.succeeded("a", t + Duration::from_secs(1)),
            Verdict::Restore
        );
        assert_eq!(o.ejected_until("a"), None);
        assert_eq!(o.succeeded("a", t + Duration::from_secs(1)), Verdict::Keep);
        // Fails again soon: the count goes on (2 s).
        let t2 = t + Duration::from_secs(2);
        assert!(matches!(
            o.failed("a", 3, 3, t2),
            Verdict::Eject { ejections: 2, .. }
        ));
        o.succeeded("a", t2);
        // Healthy for max_ejection: the next ejection is a first one again.
        let t3 = t2 + Duration::from_secs(5);
        assert!(matches!(
            o.failed("a", 3, 3, t3),
            Verdict::Eject { ejections: 1, .. }
        ));
    }

    #[test]
    fn the_last_available_instance_is_never_ejected() {
        let mut o = Outliers::new(policy());
        let t = Instant::now();
        assert_eq!(o.failed("a", 3, 1, t), Verdict::SpareLast);
        assert_eq!(o.failed("a", 30, 1, t), Verdict::SpareLast);
        assert_eq!(o.ejected_until("a"), None);
    }
}
