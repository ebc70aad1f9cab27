//! Does this node see a majority of the cluster? Members it has known, live or not.
//!
//! A key's replicas are chosen among *live* members, so the two sides of a partition choose
//! different replicas; what stops the smaller side from granting is that its replicas count
//! the members they cannot see. A member stays counted until it says it is leaving, or it has
//! been silent for a while *and* the counting node sees a live majority without it, so only
//! the majority side of a partition ever shrinks its count.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The server members a node has known, and when each was last seen live.
#[derive(Debug, Default)]
pub struct Census {
    /// `None`: live now; `Some(t)`: silent since `t`.
    known: HashMap<String, Option<Instant>>,
    /// A static quorum: the fewest live members that count as one, whatever is known.
    floor: usize,
}

impl Census {
    /// A census that also needs at least `floor` live members (a static quorum, as Akka's
    /// split-brain resolver offers: it holds after a restart, when the census starts empty).
    pub fn with_floor(floor: usize) -> Self {
        Self {
            floor,
            ..Self::default()
        }
    }

    /// At `now` the live servers are `live`; the ones in `leaving` said goodbye.
    pub fn observe<'a>(
        &mut self,
        now: Instant,
        live: impl IntoIterator<Item = &'a str>,
        leaving: impl IntoIterator<Item = &'a str>,
    ) {
        for seen in self.known.values_mut() {
            if seen.is_none() {
                *seen = Some(now);
            }
        }
        for name in live {
            self.known.insert(name.to_string(), None);
        }
        for name in leaving {
            self.known.remove(name);
        }
    }

    /// Strictly more than half of the known members are live, and at least the floor.
    pub fn has_quorum(&self) -> bool {
        let (live, known) = self.counts();
        live * 2 > known && live >= self.floor
    }

    /// Stops counting members silent for `after`, if a majority is live without them.
    pub fn forget(&mut self, now: Instant, after: Duration) -> Vec<String> {
        if !self.has_quorum() {
            return Vec::new();
        }
        let gone: Vec<String> = self
            .known
            .iter()
            .filter(|(_, s)| s.is_some_and(|t| now.saturating_duration_since(t) >= after))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &gone {
            self.known.remove(name);
        }
        gone
    }

    /// (live, known).
    pub fn counts(&self) -> (usize, usize) {
        let live = self.known.values().filter(|s| s.is_none()).count();
        (live, self.known.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minority_side_never_regains_a_majority() {
        let t0 = Instant::now();
        let after = Duration::from_secs(30);
        let mut minority = Census::default();
        let mut majority = Census::default();
        let all = ["a", "b", "c", "d", "e"];
        minority.observe(t0, all, []);
        majority.observe(t0, all, []);
        assert!(minority.has_quorum());
        let t1 = t0 + Duration::from_secs(1);
        minority.observe(t1, ["a", "b"], []);
        majority.observe(t1, ["c", "d", "e"], []);
        assert!(!minority.has_quorum());
        assert!(majority.has_quorum());
        let much_later = t1 + after * 10;
        assert!(minority.forget(much_later, after).is_empty());
        assert!(!minority.has_quorum());
        assert_eq!(majority.forget(much_later, after).len(), 2);
        assert_eq!(majority.counts(), (3, 3));
    }

    #[test]
    fn a_floor_holds_where_the_remembered_members_do_not() {
        let t0 = Instant::now();
        // Restarted while cut off: only the two of this side are known, yet no quorum.
        let mut c = Census::with_floor(3);
        c.observe(t0, ["a", "b"], []);
        assert!(!c.has_quorum());
        c.observe(t0, ["a", "b", "c"], []);
        assert!(c.has_quorum());
    }

    #[test]
    fn a_member_that_leaves_stops_counting_at_once() {
        let t0 = Instant::now();
        let mut c = Census::default();
        c.observe(t0, ["a", "b", "c", "d"], []);
        c.observe(t0, ["a", "b"], ["c", "d"]);
        assert!(c.has_quorum());
        assert_eq!(c.counts(), (2, 2));
    }
}
