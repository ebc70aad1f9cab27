//! Measurements: what one timed run records, and how runs are summarised across rounds.
//!
//! A run is a closed loop of N tasks. Each task keeps its own [`Sample`] (a completion count and
//! an hdrhistogram of latencies in nanoseconds); the samples are merged when the run ends and
//! reduced to a [`Summary`]. A cell of the report is measured once per round, and the figures
//! printed are medians across rounds ([`median`]); a ratio against a peer is the median of the
//! ratios of runs made in the same round ([`paired_ratio`]), so slow drift of the machine
//! affects both sides of each ratio alike.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histograms track, in nanoseconds (larger values are clamped).
const HIST_MAX_NS: u64 = 60_000_000_000;

/// Significant decimal digits kept by the histograms (0.1 % resolution).
const HIST_SIGFIG: u8 = 3;

/// An empty latency histogram, in nanoseconds, from 1 ns to 60 s.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// What one task, or several merged, recorded during the measured window.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    /// Calls that started and finished inside the window.
    pub(crate) completed: u64,
    /// Calls that failed (started inside the window).
    pub(crate) errors: u64,
    /// The first failure seen, to show why.
    pub(crate) first_error: Option<String>,
    /// Latency of every completed call, in nanoseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            completed: 0,
            errors: 0,
            first_error: None,
            latency: new_histogram(),
        }
    }
}

impl Sample {
    /// Records one completed call.
    pub(crate) fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
        self.completed += 1;
    }

    /// Records one failed call.
    pub(crate) fn fail(&mut self, error: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }

    /// Adds `other`'s counts and latencies to this sample.
    pub(crate) fn merge(&mut self, other: &Sample) {
        self.completed += other.completed;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        // Same bounds on both sides, and values were clamped on record: cannot fail.
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
    }

    /// Reduces the sample of a `window`-long run moving `payload` bytes per call each way.
    pub(crate) fn summarise(&self, window: Duration, payload: usize) -> Summary {
        let secs = window.as_secs_f64();
        let throughput = if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        };
        let us = |q: f64| {
            if self.latency.is_empty() {
                f64::NAN
            } else {
                self.latency.value_at_quantile(q) as f64 / 1_000.0
            }
        };
        Summary {
            throughput,
            p50_us: us(0.50),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: if self.latency.is_empty() {
                f64::NAN
            } else {
                self.latency.max() as f64 / 1_000.0
            },
            mb_per_s: throughput * payload as f64 / 1_000_000.0,
            errors: self.errors,
        }
    }
}

/// One run reduced to the figures the report prints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// Completed calls per second.
    pub(crate) throughput: f64,
    /// Median latency, microseconds.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub(crate) p99_us: f64,
    /// 99.9th percentile latency, microseconds.
    pub(crate) p999_us: f64,
    /// The slowest completed call, microseconds (its histogram bucket's upper edge, ±0.1 %).
    pub(crate) max_us: f64,
    /// Payload megabytes (10^6) per second in each direction.
    pub(crate) mb_per_s: f64,
    /// Failed calls.
    pub(crate) errors: u64,
}

impl Summary {
    /// Mean time of one call of a sequential (concurrency 1) run, microseconds.
    pub(crate) fn mean_call_us(&self) -> f64 {
        if self.throughput > 0.0 {
            1_000_000.0 / self.throughput
        } else {
            f64::INFINITY
        }
    }

    /// The per-field median of several runs of the same cell; errors are summed.
    /// (For the worst call across runs, take the maximum of `max_us` instead.)
    pub(crate) fn median_of(runs: &[Summary]) -> Summary {
        let field = |f: fn(&Summary) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Summary {
            throughput: field(|s| s.throughput),
            p50_us: field(|s| s.p50_us),
            p99_us: field(|s| s.p99_us),
            p999_us: field(|s| s.p999_us),
            max_us: field(|s| s.max_us),
            mb_per_s: field(|s| s.mb_per_s),
            errors: runs.iter().map(|s| s.errors).sum(),
        }
    }
}

/// The median of `values` (mean of the two middle values for an even count); NaN when empty.
/// NaN entries are ignored.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// `a / b`, or NaN when `b` is zero or either side is not a number.
pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 || a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a / b
    }
}

/// The median over rounds of `a[i] / b[i]`: each ratio compares two runs made in the same round.
pub(crate) fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(&x, &y)| ratio(x, y)).collect();
    median(&ratios)
}

/// The order in which `systems` contenders run in round `round`: forward on even rounds,
/// backward on odd ones (A B C, C B A, ...), so a drift in time is felt by all sides alike.
pub(crate) fn round_order(round: usize, systems: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..systems).collect()
    } else {
        (0..systems).rev().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_of(latencies_us: &[u64]) -> Sample {
        let mut s = Sample::default();
        for &us in latencies_us {
            s.record(Duration::from_micros(us));
        }
        s
    }

    #[test]
    fn merging_adds_counts_and_latencies() {
        let mut a = sample_of(&[10, 20, 30]);
        let mut b = sample_of(&[1000]);
        b.fail(|| "boom".into());
        b.fail(|| "second".into());
        a.merge(&b);
        assert_eq!(a.completed, 4);
        assert_eq!(a.errors, 2);
        assert_eq!(a.first_error.as_deref(), Some("boom"));
        assert_eq!(a.latency.len(), 4);
        // Three of four calls are at or under 30 us; the slowest is 1 ms (within 0.1 %).
        let p75 = a.latency.value_at_quantile(0.75);
        assert!((29_970..=30_030).contains(&p75), "{p75}");
        let max = a.latency.max();
        assert!((999_000..=1_001_000).contains(&max), "{max}");
    }

    #[test]
    fn summary_turns_counts_into_rates_and_microseconds() {
        let mut s = sample_of(&[100; 199]);
        s.record(Duration::from_millis(5));
        let sum = s.summarise(Duration::from_secs(2), 1_000_000);
        assert_eq!(sum.throughput, 100.0);
        assert_eq!(sum.mb_per_s, 100.0);
        assert!((sum.p50_us - 100.0).abs() < 0.2, "{}", sum.p50_us);
        // The one slow call in 200 is above the 99th percentile.
        assert!((sum.p99_us - 100.0).abs() < 0.2, "{}", sum.p99_us);
        // ...but not above the 99.9th, nor the maximum.
        assert!((sum.p999_us - 5_000.0).abs() < 5.0, "{}", sum.p999_us);
        assert!((sum.max_us - 5_000.0).abs() < 5.0, "{}", sum.max_us);
        assert_eq!(sum.errors, 0);
        assert_eq!(sum.mean_call_us(), 10_000.0);
    }

    #[test]
    fn an_empty_run_has_no_latency_and_zero_rate() {
        let sum = Sample::default().summarise(Duration::from_secs(1), 100);
        assert_eq!(sum.throughput, 0.0);
        assert!(sum.p50_us.is_nan());
        assert!(sum.max_us.is_nan());
        assert_eq!(sum.mean_call_us(), f64::INFINITY);
    }

    #[test]
    fn median_handles_odd_even_empty_and_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 7.0]), 7.0);
    }

    #[test]
    fn ratios_pair_runs_of_the_same_round() {
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert!(ratio(1.0, 0.0).is_nan());
        // Round 2 ran on a machine twice as slow for both sides: the paired ratio ignores it.
        let colony = [300.0, 150.0, 310.0];
        let peer = [200.0, 100.0, 200.0];
        assert_eq!(paired_ratio(&colony, &peer), 1.5);
    }

    #[test]
    fn median_summary_is_per_field_and_sums_errors() {
        let runs = [
            Summary {
                throughput: 10.0,
                p50_us: 5.0,
                p99_us: 50.0,
                p999_us: 80.0,
                max_us: 900.0,
                mb_per_s: 1.0,
                errors: 1,
            },
            Summary {
                throughput: 30.0,
                p50_us: 1.0,
                p99_us: 70.0,
                p999_us: 90.0,
                max_us: 100.0,
                mb_per_s: 3.0,
                errors: 2,
            },
            Summary {
                throughput: 20.0,
                p50_us: 3.0,
                p99_us: 60.0,
                p999_us: 85.0,
                max_us: 500.0,
                mb_per_s: 2.0,
                errors: 0,
            },
        ];
        let m = Summary::median_of(&runs);
        assert_eq!(m.throughput, 20.0);
        assert_eq!(m.p50_us, 3.0);
        assert_eq!(m.p99_us, 60.0);
        assert_eq!(m.p999_us, 85.0);
        assert_eq!(m.max_us, 500.0);
        assert_eq!(m.mb_per_s, 2.0);
        assert_eq!(m.errors, 3);
    }

    #[test]
    fn rounds_alternate_direction() {
        assert_eq!(round_order(0, 3), vec![0, 1, 2]);
        assert_eq!(round_order(1, 3), vec![2, 1, 0]);
        assert_eq!(round_order(2, 2), vec![0, 1]);
        assert_eq!(round_order(3, 2), vec![1, 0]);
    }
}
