//! What a subscriber process counts, and the one-line report it sends its parent.
//!
//! A subscriber counts the ticks of the current run (set by the parent before each run):
//! deliveries, duplicates (a bit per sequence number), the wall-clock times of the first and
//! last delivery, and the latency of each (its arrival minus `sent_ns`). Probes and every event
//! of any run are counted too: the parent waits on them before a run (subscriptions known) and
//! after the warm-up (backlog drained). The report is a text line so the parent reads it from
//! the child's stdout; the histogram travels as `value:count` pairs of its recorded buckets
//! (enough to merge and take quantiles, no serializer needed).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::stats::new_histogram;
use crate::tick::now_ns;

/// The first word of a report line.
pub(crate) const REPORT: &str = "report";

/// Sequence numbers above this are not tracked for duplicates (the bit set stays small).
const MAX_TRACKED_SEQ: u64 = 1 << 30;

/// A subscriber's counters, shared by its receiving task(s) and its command loop.
pub(crate) type SharedTally = Arc<Mutex<Tally>>;

/// A subscriber's counters.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    report: Report,
    /// One bit per sequence number delivered in the current run.
    seen: Vec<u64>,
}

impl Tally {
    /// A tally shared between tasks.
    pub(crate) fn shared() -> SharedTally {
        Arc::new(Mutex::new(Tally::default()))
    }

    /// Starts counting run `run` (its ticks only); probes and events keep counting.
    pub(crate) fn start(&mut self, run: u32) {
        let probes = self.report.probes;
        let events = self.report.events;
        self.report = Report {
            run,
            probes,
            events,
            ..Report::default()
        };
        self.seen.clear();
    }

    /// Records one delivered tick, now.
    pub(crate) fn record(&mut self, run: u32, probe: bool, seq: u64, sent_ns: u64) {
        self.record_at(now_ns(), run, probe, seq, sent_ns);
    }

    fn record_at(&mut self, now: u64, run: u32, probe: bool, seq: u64, sent_ns: u64) {
        let r = &mut self.report;
        r.events += 1;
        if probe {
            r.probes += 1;
            return;
        }
        if run != r.run {
            return;
        }
        r.received += 1;
        if r.first_ns == 0 {
            r.first_ns = now;
        }
        r.last_ns = r.last_ns.max(now);
        r.latency
            .saturating_record(now.saturating_sub(sent_ns).max(1));
        if seq < MAX_TRACKED_SEQ {
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if word >= self.seen.len() {
                self.seen.resize(word + 1, 0);
            }
            if self.seen[word] & (1 << bit) != 0 {
                r.duplicates += 1;
            }
            self.seen[word] |= 1 << bit;
        }
    }

    /// A copy of the counters.
    pub(crate) fn report(&self) -> Report {
        self.report.clone()
    }
}

/// A subscriber's counters, as sent to the parent.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// The run counted.
    pub(crate) run: u32,
    /// Ticks of the run delivered to the handler (duplicates included).
    pub(crate) received: u64,
    /// Deliveries of a sequence number already delivered in this run.
    pub(crate) duplicates: u64,
    /// Probes delivered, ever.
    pub(crate) probes: u64,
    /// Events of any run delivered, ever.
    pub(crate) events: u64,
    /// First delivery of the run, UNIX ns (0: none).
    pub(crate) first_ns: u64,
    /// Last delivery of the run, UNIX ns (0: none).
    pub(crate) last_ns: u64,
    /// Publish-to-handler latency of each delivery, ns.
    pub(crate) latency: Histogram<u64>,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            run: 0,
            received: 0,
            duplicates: 0,
            probes: 0,
            events: 0,
            first_ns: 0,
            last_ns: 0,
            latency: new_histogram(),
        }
    }
}

impl Report {
    /// `report <run> <received> <duplicates> <probes> <events> <first_ns> <last_ns> <v:c,...>`
    /// (`-` for an empty histogram).
    pub(crate) fn to_line(&self) -> String {
        let mut line = format!(
            "{REPORT} {} {} {} {} {} {} {} ",
            self.run,
            self.received,
            self.duplicates,
            self.probes,
            self.events,
            self.first_ns,
            self.last_ns
        );
        if self.latency.is_empty() {
            line.push('-');
        }
        for (i, v) in self.latency.iter_recorded().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{}:{}", v.value_iterated_to(), v.count_at_value());
        }
        line
    }

    /// Parses [`Report::to_line`]'s output.
    pub(crate) fn parse(line: &str) -> Option<Report> {
        let mut words = line.split_whitespace();
        if words.next()? != REPORT {
            return None;
        }
        let mut n = || -> Option<u64> { words.next()?.parse().ok() };
        let run = u32::try_from(n()?).ok()?;
        let (received, duplicates, probes, events) = (n()?, n()?, n()?, n()?);
        let (first_ns, last_ns) = (n()?, n()?);
        let mut latency = new_histogram();
        let pairs = words.next()?;
        if pairs != "-" {
            for pair in pairs.split(',') {
                let (value, count) = pair.split_once(':')?;
                latency.saturating_record_n(value.parse().ok()?, count.parse().ok()?);
            }
        }
        Some(Report {
            run,
            received,
            duplicates,
            probes,
            events,
            first_ns,
            last_ns,
            latency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_current_run_and_finds_duplicates() {
        let mut t = Tally::default();
        t.record_at(100, 0, true, 0, 0); // a probe
        t.start(3);
        t.record_at(1_000, 2, false, 0, 900); // a straggler of run 2
        t.record_at(2_000, 3, false, 0, 1_500);
        t.record_at(3_000, 3, false, 70, 2_900);
        t.record_at(4_000, 3, false, 0, 3_000); // seq 0 again
        let r = t.report();
        assert_eq!((r.run, r.received, r.duplicates), (3, 3, 1));
        assert_eq!((r.probes, r.events), (1, 5));
        assert_eq!((r.first_ns, r.last_ns), (2_000, 4_000));
        assert_eq!(r.latency.len(), 3);
        t.start(4);
        let r = t.report();
        assert_eq!((r.received, r.probes, r.events, r.first_ns), (0, 1, 5, 0));
        assert!(r.latency.is_empty());
    }

    #[test]
    fn report_lines_round_trip() {
        let mut t = Tally::default();
        t.start(1);
        for (seq, lat) in [(0, 10_000), (1, 10_000), (2, 250_000)] {
            t.record_at(1_000_000, 1, false, seq, 1_000_000 - lat);
        }
        let r = t.report();
        let back = Report::parse(&r.to_line()).unwrap();
        assert_eq!((back.run, back.received, back.events), (1, 3, 3));
        assert_eq!(back.latency.len(), 3);
        assert_eq!(
            back.latency.value_at_quantile(0.5),
            r.latency.value_at_quantile(0.5)
        );
        assert_eq!(back.latency.max(), r.latency.max());
        let empty = Report::parse(&Report::default().to_line()).unwrap();
        assert!(empty.latency.is_empty());
        assert!(Report::parse("listening 1.2.3.4:5").is_none());
    }
}
