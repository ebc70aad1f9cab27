//! The event of the pub/sub scenario, the same for every system.
//!
//! A [`Tick`] carries which run it belongs to (so a subscriber ignores stragglers of an earlier
//! run or of the warm-up), whether it is a probe (sent until every subscriber is known to
//! receive), a sequence number (so loss and duplicates can be counted), the wall-clock time it
//! was handed to the publisher, and a payload. colony serializes it with its codec (serde); NATS
//! gets the same fields packed by hand ([`Tick::encode`]): 21 bytes of header, then the payload.
//!
//! Publisher and subscribers run on the same machine, so `CLOCK_REALTIME` (UNIX nanoseconds) is
//! one clock for all processes: latency is the subscriber's [`now_ns`] minus `sent_ns`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bytes of the packed header: run (4), probe (1), seq (8), sent_ns (8).
const HEADER: usize = 21;

/// One published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tick {
    /// The run it belongs to; subscribers count only the current run's ticks.
    pub(crate) run: u32,
    /// A probe, sent before a run to learn that subscriptions have reached the publisher.
    pub(crate) probe: bool,
    /// Sequence number within the run, from 0.
    pub(crate) seq: u64,
    /// When the publisher was handed the event, UNIX nanoseconds.
    pub(crate) sent_ns: u64,
    /// The body (100 bytes in the scenario), as serde bytes: one copy, as a Rust user would
    /// write a binary field (a plain `Vec<u8>` goes through serde byte by byte).
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
}

impl Tick {
    /// The packed form sent over NATS: header, little-endian, then the payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.payload.len());
        out.extend_from_slice(&self.run.to_le_bytes());
        out.push(u8::from(self.probe));
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.sent_ns.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    /// The header of a packed tick (the payload is not copied): `(run, probe, seq, sent_ns)`.
    pub(crate) fn decode_header(bytes: &[u8]) -> Option<(u32, bool, u64, u64)> {
        if bytes.len() < HEADER {
            return None;
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut run = [0u8; 4];
        run.copy_from_slice(&bytes[..4]);
        Some((
            u32::from_le_bytes(run),
            bytes[4] != 0,
            u64_at(5),
            u64_at(13),
        ))
    }
}

/// Who publishes and how it is delivered: colony's two guarantees, or NATS core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// colony, at-most-once (its default).
    AtMostOnce,
    /// colony, at-least-once (acknowledged, redelivered).
    AtLeastOnce,
    /// NATS core (at-most-once).
    Nats,
}

impl Mode {
    /// Every mode, in table order.
    pub(crate) const ALL: [Mode; 3] = [Mode::AtMostOnce, Mode::AtLeastOnce, Mode::Nats];

    /// Its column in the tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Mode::AtMostOnce => "colony at-most-once",
            Mode::AtLeastOnce => "colony at-least-once",
            Mode::Nats => "NATS core",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Mode::AtMostOnce => "amo",
            Mode::AtLeastOnce => "alo",
            Mode::Nats => "nats",
        }
    }

    /// The subject published to in `scenario`: `bench.<mode>.<scenario>.tick`. Each mode and
    /// scenario has its own, so subscribers of one never see another's ticks.
    pub(crate) fn subject(self, scenario: &str) -> String {
        format!("bench.{}.{scenario}.tick", self.tag())
    }

    /// What subscribers of `scenario` subscribe to: `bench.<mode>.<scenario>.>` (a wildcard,
    /// as real subscribers would use).
    pub(crate) fn pattern(self, scenario: &str) -> String {
        format!("bench.{}.{scenario}.>", self.tag())
    }
}

/// The wall clock in UNIX nanoseconds (0 if the clock is before 1970).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_header_round_trips() {
        let tick = Tick {
            run: 7,
            probe: true,
            seq: 1 << 40,
            sent_ns: now_ns(),
            payload: vec![b'x'; 100],
        };
        let bytes = tick.encode();
        assert_eq!(bytes.len(), 121);
        assert_eq!(
            Tick::decode_header(&bytes),
            Some((tick.run, tick.probe, tick.seq, tick.sent_ns))
        );
        assert_eq!(Tick::decode_header(&bytes[..20]), None);
    }

    #[test]
    fn modes_have_their_own_subjects() {
        assert_eq!(Mode::Nats.subject("fan"), "bench.nats.fan.tick");
        assert_eq!(Mode::AtLeastOnce.pattern("one"), "bench.alo.one.>");
        assert_ne!(
            Mode::AtMostOnce.subject("one"),
            Mode::AtLeastOnce.subject("one")
        );
    }
}
