//! The fence: a resource that lock holders write to with their fencing token, and that tells
//! afterwards what it accepted, what it refused, and whether two holders ever wrote at once.
//!
//! It plays the part of the storage a distributed lock protects. The rule it enforces, per key,
//! is the one `LockGuard::token` is made for: a write whose token is smaller than the largest
//! the fence has accepted for the key is **rejected** (`Conflict`, "stale token"); every other
//! write is accepted, and its token becomes the largest. Writes come in three phases: a
//! critical section is a `Begin` and an `End` with one token; a `Single` is a section of one
//! write.
//!
//! # What the report means, per key ([`KeyFence`])
//!
//! - `accepted`: every accepted write, in the order the fence accepted them (token, writer,
//!   phase, microseconds since the fence started). `rejected`: every rejected one, likewise,
//!   with the largest token at the time.
//! - **open section**: the last accepted `Begin` whose `End` has not been accepted. A later
//!   `Begin` or `Single` (accepted) ends it as far as the fence is concerned.
//! - `sections`: accepted `End`s that closed the open section of the same writer and token: the
//!   critical sections that ran to completion undisturbed.
//! - `preempted`: a `Begin` or `Single` accepted with a **larger** token while another section
//!   was open. That is what fencing is for: the older holder is stale (its lease ended while
//!   it was inside: a pause, a partition), the newer one proceeds, and the older one's `End`
//!   (any later write of it) is rejected. Legitimate after a pause or partition; in a run
//!   with neither it means two holders believed they held the lock at once and fencing
//!   contained it.
//! - `overlaps`: a `Begin` or `Single` accepted with the **same** token as an open section of
//!   **another writer**: two holders given one token, which no fence can tell apart. Always a
//!   violation. (A `Begin` with a smaller token is never accepted, so it never overlaps.)
//! - `reused`: a `Begin` or `Single` accepted with the same token as the largest, from another
//!   writer than the one that first wrote with it, open section or not (a token granted
//!   twice). Every overlap is also a reuse.
//! - `unmatched_ends`: accepted `End`s that closed no section of theirs (an `End` without its
//!   `Begin`, or after a preemption with an equal token); 0 in any sane run.
//!
//! The fence runs on a node of a cluster of its own (`.cluster("fence")`, same CA), so it never
//! gossips with the nodes under test (it would relay their heartbeats across a partition); they
//! call it with `.at(addr)`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony::{ClusterCa, Code, Context, Error, Handler, Message, Node};
use serde::{Deserialize, Serialize};

use crate::node_builder;

/// The fence's service name.
pub const FENCE: &str = "fence";

/// Where a write stands in its writer's critical section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The section starts.
    Begin,
    /// The section ends.
    End,
    /// A section of one write.
    Single,
}

/// A write to the fence: `Ok(())` if accepted, `Conflict` ("stale token") if rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Write {
    /// The resource written.
    pub key: String,
    /// The writer's fencing token.
    pub token: u64,
    /// Who writes (a node name, `node/worker`...).
    pub writer: String,
    /// Which write of the section this is.
    pub phase: Phase,
}

impl Message for Write {
    type Reply = ();
    const ENDPOINT: &'static str = "Fence.Write";
}

/// Asks the fence for its [`FenceReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {}

impl Message for Report {
    type Reply = FenceReport;
    const ENDPOINT: &'static str = "Fence.Report";
}

/// One write, as the fence saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceWrite {
    /// Its token.
    pub token: u64,
    /// Its writer.
    pub writer: String,
    /// Its phase.
    pub phase: Phase,
    /// When the fence took it, in microseconds since the fence started.
    pub at_us: u64,
    /// The largest token the fence had accepted for the key just before.
    pub largest_before: u64,
}

/// What the fence knows of one key (see the module's docs for each count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFence {
    /// The largest token accepted.
    pub largest: u64,
    /// The writer that first wrote with `largest`.
    pub largest_writer: String,
    /// Accepted writes, in order.
    pub accepted: Vec<FenceWrite>,
    /// Rejected writes, in order.
    pub rejected: Vec<FenceWrite>,
    /// Sections completed undisturbed.
    pub sections: u64,
    /// Open sections cut short by a larger token.
    pub preempted: u64,
    /// Writes that shared an open section's token with another writer.
    pub overlaps: u64,
    /// Writes that reused the largest token from another writer.
    pub reused: u64,
    /// Accepted ends that closed no section of theirs.
    pub unmatched_ends: u64,
    /// The open section: (token, writer).
    pub open: Option<(u64, String)>,
}

impl KeyFence {
    /// Tokens of the accepted writes that open a section (`Begin` and `Single`), in order.
    pub fn opening_tokens(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .filter(|w| w.phase != Phase::End)
            .map(|w| w.token)
            .collect()
    }

    /// The holders in the order they wrote: (token, writer) of the accepted writes that open a
    /// section, a holder's consecutive writes with one token counted once.
    pub fn holders(&self) -> Vec<(u64, String)> {
        let mut holders: Vec<(u64, String)> = Vec::new();
        for w in self.accepted.iter().filter(|w| w.phase != Phase::End) {
            if holders.last() != Some(&(w.token, w.writer.clone())) {
                holders.push((w.token, w.writer.clone()));
            }
        }
        holders
    }

    /// True if the [`holders`](Self::holders)' tokens strictly increase: every holder had a
    /// token of its own, larger than every earlier holder's.
    pub fn tokens_strictly_increase(&self) -> bool {
        self.holders().windows(2).all(|w| w[0].0 < w[1].0)
    }

    fn write(&mut self, w: &Write, at_us: u64) -> Result<(), Error> {
        let seen = FenceWrite {
            token: w.token,
            writer: w.writer.clone(),
            phase: w.phase,
            at_us,
            largest_before: self.largest,
        };
        if w.token < self.largest {
            self.rejected.push(seen);
            return Err(Error::new(
                Code::Conflict,
                format!(
                    "stale token {} from {} on {:?}: the fence has accepted {}",
                    w.token, w.writer, w.key, self.largest
                ),
            ));
        }
        match w.phase {
            Phase::Begin | Phase::Single => {
                if let Some((open, writer)) = &self.open {
                    if w.token > *open {
                        self.preempted += 1;
                    } else if *writer != w.writer {
                        self.overlaps += 1;
                    }
                }
                if !self.accepted.is_empty()
                    && w.token == self.largest
                    && self.largest_writer != w.writer
                {
                    self.reused += 1;
                }
                self.open = (w.phase == Phase::Begin).then(|| (w.token, w.writer.clone()));
            }
            Phase::End => {
                if self.open.as_ref() == Some(&(w.token, w.writer.clone())) {
                    self.sections += 1;
                    self.open = None;
                } else {
                    self.unmatched_ends += 1;
                }
            }
        }
        if w.token > self.largest || self.accepted.is_empty() {
            self.largest = w.token;
            self.largest_writer = w.writer.clone();
        }
        self.accepted.push(seen);
        Ok(())
    }
}

/// The fence's state, per key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReport {
    /// Every key written, with what the fence saw of it.
    pub keys: BTreeMap<String, KeyFence>,
}

impl FenceReport {
    /// What the fence saw of `key` (empty if never written).
    pub fn key(&self, key: &str) -> KeyFence {
        self.keys.get(key).cloned().unwrap_or_default()
    }
}

#[derive(Debug)]
struct State {
    started: Instant,
    report: FenceReport,
}

/// The fence service's instance (all instances share one state).
#[derive(Debug, Clone)]
struct FenceService {
    state: Arc<Mutex<State>>,
}

impl Handler<Write> for FenceService {
    async fn handle(&mut self, req: Write, _ctx: &Context) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap();
        let at_us = state.started.elapsed().as_micros() as u64;
        state
            .report
            .keys
            .entry(req.key.clone())
            .or_default()
            .write(&req, at_us)
    }
}

impl Handler<Report> for FenceService {
    async fn handle(&mut self, _req: Report, _ctx: &Context) -> Result<FenceReport, Error> {
        Ok(self.state.lock().unwrap().report.clone())
    }
}

/// A fence running on a node of its own in this process.
#[derive(Debug)]
pub struct Fence {
    node: Node,
}

impl Fence {
    /// Starts a node named `fence` in cluster `fence`, trusting `ca`, serving [`FENCE`].
    pub async fn start(ca: &Arc<ClusterCa>) -> Self {
        let node = node_builder(ca, "fence")
            .cluster("fence")
            .start()
            .await
            .expect("fence node starts");
        let service = FenceService {
            state: Arc::new(Mutex::new(State {
                started: Instant::now(),
                report: FenceReport::default(),
            })),
        };
        node.service(FENCE)
            .handler::<Write>()
            .handler::<Report>()
            .spawn(move || service.clone())
            .await
            .expect("fence service starts");
        Self { node }
    }

    /// Where the nodes under test call it (`--fence ADDR`).
    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    /// The fence's node (to call the nodes under test with `.at(addr)`).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The fence's report, through its [`Report`] endpoint.
    pub async fn report(&self) -> FenceReport {
        self.node
            .client()
            .request(FENCE, Report {})
            .at(self.node.addr())
            .timeout(Duration::from_secs(5))
            .await
            .expect("the fence reports")
    }

    /// Stops the fence's node.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(token: u64, writer: &str, phase: Phase) -> Write {
        Write {
            key: "k".into(),
            token,
            writer: writer.into(),
            phase,
        }
    }

    #[test]
    fn the_report_counts_sections_preemptions_overlaps_and_rejections() {
        let mut k = KeyFence::default();
        assert!(k.write(&w(5, "a", Phase::Begin), 0).is_ok());
        assert!(k.write(&w(5, "a", Phase::End), 1).is_ok());
        assert_eq!(k.sections, 1);
        // A newer token preempts an open section; the older one's end is stale.
        assert!(k.write(&w(6, "a", Phase::Begin), 2).is_ok());
        assert!(k.write(&w(7, "b", Phase::Begin), 3).is_ok());
        assert_eq!(k.preempted, 1);
        assert!(k.write(&w(6, "a", Phase::End), 4).is_err());
        assert_eq!(k.rejected.len(), 1);
        // The same token from another writer while open: an overlap (and a reuse).
        assert!(k.write(&w(7, "c", Phase::Begin), 5).is_ok());
        assert_eq!((k.overlaps, k.reused), (1, 1));
        assert!(k.write(&w(7, "c", Phase::End), 6).is_ok());
        assert!(k.write(&w(7, "b", Phase::End), 7).is_ok());
        assert_eq!((k.sections, k.unmatched_ends), (2, 1));
        assert!(!k.tokens_strictly_increase());
        assert_eq!(k.opening_tokens(), vec![5, 6, 7, 7]);
        // One holder writing twice is one holder.
        let mut k = KeyFence::default();
        for (token, phase) in [(1, Phase::Single), (1, Phase::Single), (2, Phase::Begin)] {
            assert!(k.write(&w(token, "a", phase), 0).is_ok());
        }
        assert!(k.tokens_strictly_increase());
        assert_eq!(k.holders().len(), 2);
    }
}
