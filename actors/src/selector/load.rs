//! What callers learn about one instance, call by call, without asking anyone.
//!
//! Every field is an atomic that the calling tasks update in line: the count of calls
//! outstanding, a smoothed round-trip time and its variation (RFC 6298's estimator, the one TCP
//! uses for its retransmission timer), and the run of consecutive failures. Updates race
//! benignly: a lost latency sample only makes the average a little less recent.
//!
//! The latency used to compare instances fades while an instance gets no calls (Linkerd's and
//! Finagle's decaying estimate): an instance that was slow once, or looked slow during a pause,
//! is tried again after a while instead of being passed over forever. The fading is done by the
//! selector's timer ([`Load::fade`]), so the call path reads no clock for it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

/// Round-trip time assumed for an instance with no sample yet: low enough that a new instance
/// gets traffic soon, high enough that it does not get all of it.
const UNKNOWN_RTT_NS: u64 = 1_000_000;

/// Time constant of the fading of an idle instance's latency (Linkerd's default decay).
pub const FADE_TIME: Duration = Duration::from_secs(10);

/// A weight of one, in 1/1024ths.
const WHOLE: u32 = 1024;

/// Whether an instance takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Takes calls.
    Healthy,
    /// Ejected after consecutive failures; takes no calls until its ejection ends.
    Ejected,
    /// Its ejection ended: one probe call decides whether it returns.
    Probing,
}

/// Live statistics of one instance, shared by every caller of the node.
#[derive(Debug)]
pub struct Load {
    outstanding: AtomicU32,
    srtt_ns: AtomicU64,
    rttvar_ns: AtomicU64,
    /// Whether a latency sample came since the last [`fade`](Load::fade).
    sampled: AtomicBool,
    /// How much of the latency still counts when comparing instances, in 1/1024ths: fades
    /// while the instance is idle, back to whole on the next sample. Timeouts use the
    /// latency itself.
    weight: AtomicU32,
    consecutive_failures: AtomicU32,
    health: AtomicU8,
    probe_taken: AtomicBool,
    calls: AtomicU64,
    failures: AtomicU64,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            outstanding: AtomicU32::new(0),
            srtt_ns: AtomicU64::new(0),
            rttvar_ns: AtomicU64::new(0),
            sampled: AtomicBool::new(false),
            weight: AtomicU32::new(WHOLE),
            consecutive_failures: AtomicU32::new(0),
            health: AtomicU8::new(0),
            probe_taken: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

/// A call in flight on an instance; dropping it ends the call's share of the load.
#[derive(Debug)]
#[must_use = "the call counts as outstanding only while this lives"]
pub struct InFlight<'a>(&'a Load);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

impl Load {
    /// Counts a call as outstanding until the returned guard drops.
    pub fn begin(&self) -> InFlight<'_> {
        self.outstanding.fetch_add(1, Relaxed);
        self.calls.fetch_add(1, Relaxed);
        InFlight(self)
    }

    /// Calls in flight now.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Relaxed)
    }

    /// Calls started on this instance, and how many of them failed.
    pub fn totals(&self) -> (u64, u64) {
        (self.calls.load(Relaxed), self.failures.load(Relaxed))
    }

    /// Folds one measured round trip into the smoothed estimate (RFC 6298, α = 1/8, β = 1/4).
    pub fn observe(&self, rtt: Duration) {
        self.sampled.store(true, Relaxed);
        if self.weight.load(Relaxed) != WHOLE {
            self.weight.store(WHOLE, Relaxed);
        }
        let r = rtt.as_nanos().min(u128::from(u64::MAX / 8)) as u64;
        let srtt = self.srtt_ns.load(Relaxed);
        if srtt == 0 {
            self.srtt_ns.store(r.max(1), Relaxed);
            self.rttvar_ns.store(r / 2, Relaxed);
            return;
        }
        let var = self.rttvar_ns.load(Relaxed);
        self.rttvar_ns
            .store((3 * var + srtt.abs_diff(r)) / 4, Relaxed);
        self.srtt_ns.store(((7 * srtt + r) / 8).max(1), Relaxed);
    }

    /// The smoothed round trip; `None` before the first sample.
    pub fn srtt(&self) -> Option<Duration> {
        match self.srtt_ns.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// How long an attempt may reasonably take: `srtt + 4·rttvar` (TCP's retransmission
    /// timeout), at least `floor`. `None` before the first sample.
    pub fn attempt_timeout(&self, floor: Duration) -> Option<Duration> {
        let srtt = self.srtt_ns.load(Relaxed);
        (srtt != 0).then(|| {
            let rto = srtt + 4 * self.rttvar_ns.load(Relaxed);
            Duration::from_nanos(rto).max(floor)
        })
    }

    /// About the 95th percentile of the round trip (`srtt + 2·rttvar`), when to send a hedge.
    pub fn hedge_after(&self, floor: Duration) -> Option<Duration> {
        let srtt = self.srtt_ns.load(Relaxed);
        (srtt != 0)
            .then(|| Duration::from_nanos(srtt + 2 * self.rttvar_ns.load(Relaxed)).max(floor))
    }

    /// Power-of-two-choices cost: expected latency times the calls it would queue behind
    /// (Finagle's and Linkerd's "EWMA × pending" idea).
    pub fn cost(&self) -> u64 {
        let rtt = match self.srtt_ns.load(Relaxed) {
            0 => UNKNOWN_RTT_NS,
            ns => ns * u64::from(self.weight.load(Relaxed)) / u64::from(WHOLE),
        };
        rtt.saturating_mul(u64::from(self.outstanding()) + 1)
    }

    /// Called every `tick`: an instance that got no latency sample since the last call fades
    /// its estimate by `exp(-tick / FADE_TIME)`, towards "worth trying again".
    pub fn fade(&self, tick: Duration) {
        if self.sampled.swap(false, Relaxed) {
            return;
        }
        let weight = self.weight.load(Relaxed);
        if weight > 1 {
            let factor = (-tick.as_secs_f64() / FADE_TIME.as_secs_f64()).exp();
            self.weight
                .store(((f64::from(weight) * factor) as u32).max(1), Relaxed);
        }
    }

    /// Records a success. True when it changes what the selector knows (the instance had
    /// failures, or this was its probe), so only those successes need to be told to it.
    pub fn succeeded(&self) -> bool {
        let had_failures = self.consecutive_failures.load(Relaxed) != 0;
        if had_failures {
            self.consecutive_failures.store(0, Relaxed);
        }
        had_failures || self.health() == Health::Probing
    }

    /// Records a failure; returns the length of the current run of failures.
    pub fn failed(&self) -> u32 {
        self.failures.fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed) + 1
    }

    /// Failures in a row so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// Whether the instance takes calls.
    pub fn health(&self) -> Health {
        match self.health.load(Relaxed) {
            0 => Health::Healthy,
            1 => Health::Ejected,
            _ => Health::Probing,
        }
    }

    /// Sets the health; only the instance's selector does this.
    pub fn set_health(&self, health: Health) {
        self.probe_taken.store(false, Relaxed);
        self.health.store(
            match health {
                Health::Healthy => 0,
                Health::Ejected => 1,
                Health::Probing => 2,
            },
            Relaxed,
        );
    }

    /// Whether a call may go here now: always when healthy; never when ejected; once when
    /// probing (the first caller to ask takes the probe).
    pub fn admits(&self) -> bool {
        match self.health() {
            Health::Healthy => true,
            Health::Ejected => false,
            Health::Probing => !self.probe_taken.swap(true, Relaxed),
        }
    }

    /// Whether the instance takes ordinary (non-probe) calls.
    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimator_follows_rfc_6298() {
        let load = Load::default();
        assert_eq!(load.attempt_timeout(Duration::ZERO), None);
        load.observe(Duration::from_millis(8));
        // First sample: srtt = r, rttvar = r/2, rto = r + 4·r/2 = 3r.
        assert_eq!(load.srtt(), Some(Duration::from_millis(8)));
        assert_eq!(
            load.attempt_timeout(Duration::ZERO),
            Some(Duration::from_millis(24))
        );
        load.observe(Duration::from_millis(16));
        // rttvar = 3/4·4 + 1/4·8 = 5; srtt = 7/8·8 + 1/8·16 = 9.
        assert_eq!(load.srtt(), Some(Duration::from_millis(9)));
        assert_eq!(
            load.attempt_timeout(Duration::ZERO),
            Some(Duration::from_millis(29))
        );
        assert_eq!(
            load.attempt_timeout(Duration::from_millis(50)),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn outstanding_follows_the_guards_and_raises_the_cost() {
        let load = Load::default();
        load.observe(Duration::from_micros(100));
        let idle = load.cost();
        let a = load.begin();
        let b = load.begin();
        assert_eq!(load.outstanding(), 2);
        assert_eq!(load.cost(), 3 * idle);
        drop((a, b));
        assert_eq!(load.outstanding(), 0);
        assert_eq!(load.totals(), (2, 0));
    }

    #[test]
    fn an_idle_instance_latency_fades() {
        let load = Load::default();
        load.observe(Duration::from_millis(10));
        // Sampled since the last tick: no fading.
        load.fade(FADE_TIME);
        assert_eq!(load.cost(), 10_000_000);
        // Idle for one time constant: e^-1 of it (in 1/1024ths), for comparisons only.
        load.fade(FADE_TIME);
        let faded = load.cost();
        assert!((3_670_000..=3_690_000).contains(&faded), "{faded}");
        assert_eq!(load.srtt(), Some(Duration::from_millis(10)));
        // A new sample makes it count whole again.
        load.observe(Duration::from_millis(10));
        assert_eq!(load.cost(), 10_000_000);
    }

    #[test]
    fn a_probing_instance_admits_exactly_one_call() {
        let load = Load::default();
        load.set_health(Health::Ejected);
        assert!(!load.admits());
        load.set_health(Health::Probing);
        assert!(load.admits());
        assert!(!load.admits());
        load.set_health(Health::Healthy);
        assert!(load.admits() && load.admits());
    }

    #[test]
    fn only_successes_that_change_something_are_reported() {
        let load = Load::default();
        assert!(!load.succeeded());
        assert_eq!(load.failed(), 1);
        assert_eq!(load.failed(), 2);
        assert!(load.succeeded());
        assert_eq!(load.consecutive_failures(), 0);
        assert!(!load.succeeded());
    }
}
