//! Since when has this replica been one of a key's replicas? The quarantine rule.
//!
//! A replica keeps no state on disk, and the replicas of a key change as members come and go.
//! A replica that knows nothing of a key may be new to it (just started, or just moved into the
//! key's top `r` when another member left) while the key's old replicas granted a lease that is
//! still running. So a replica creates a key only after it has been one of that key's replicas
//! through every membership it saw for a whole quarantine (at least the longest lease the
//! cluster grants): any lease granted before it joined has ended by then. Until that, it
//! answers only for keys it already knows; the key's other replicas, which do know, still form
//! a majority when one member changes.
//!
//! A replica that did not see a majority of the cluster was not one of anything: the majority
//! side may have moved its keys elsewhere and granted them meanwhile. So a membership seen
//! without a majority breaks the run too, and what the replica recorded before the current run
//! began is stale ([`Responsibility::since`]): it is answered like a key never seen, except
//! that its token stays a floor.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rendezvous::is_replica;
use super::table::Creation;

/// Most memberships kept; past this the oldest are dropped and the quarantine restarts from
/// the oldest one kept (conservative: the replica only waits longer).
const MAX_HISTORY: usize = 1024;

/// The memberships this replica saw during the last quarantine, and what they imply.
#[derive(Debug)]
pub struct Responsibility {
    me: String,
    replicas: usize,
    quarantine: Duration,
    /// (since, members sorted by name, whether this node saw a majority of the cluster),
    /// oldest first; the first entry is the one in effect at the start of the window.
    history: VecDeque<(Instant, Arc<[String]>, bool)>,
}

impl Responsibility {
    /// A replica named `me` of keys held by `replicas` members each, that waits `quarantine`
    /// before creating keys, and has seen no membership yet (its start).
    pub fn new(me: impl Into<String>, replicas: usize, quarantine: Duration) -> Self {
        Self {
            me: me.into(),
            replicas: replicas.max(1),
            quarantine,
            history: VecDeque::new(),
        }
    }

    /// At `now` the live members (servers, not leaving) are `members`, and this node does or
    /// does not see a majority of the cluster (`quorum`, from the [`Census`](super::Census)).
    pub fn observe(&mut self, now: Instant, mut members: Vec<String>, quorum: bool) {
        members.sort_unstable();
        members.dedup();
        if self
            .history
            .back()
            .is_some_and(|(_, m, q)| **m == *members && *q == quorum)
        {
            return;
        }
        self.history.push_back((now, members.into(), quorum));
        // Keep the entry in effect at the window's start; drop the ones before it.
        let start = now.checked_sub(self.quarantine);
        while self.history.len() > 1 && start.is_some_and(|s| self.history[1].0 <= s)
            || self.history.len() > MAX_HISTORY
        {
            self.history.pop_front();
        }
    }

    /// The live members now.
    pub fn members(&self) -> &[String] {
        self.history.back().map(|(_, m, _)| &m[..]).unwrap_or(&[])
    }

    /// The start of this node's current run as one of `key`'s replicas with a majority in
    /// sight; `None` if it is not one now. A record of the key last updated before this is
    /// stale. Runs older than the kept window start at the window's first entry (conservative:
    /// records from before it count as stale).
    pub fn since(&self, key: &str) -> Option<Instant> {
        let mut since = None;
        for (at, members, quorum) in &self.history {
            let responsible = *quorum && is_replica(key, members, self.replicas, &self.me);
            since = match (responsible, since) {
                (true, None) => Some(*at),
                (true, run) => run,
                (false, _) => None,
            };
        }
        since
    }

    /// The number of replicas per key.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Is this node one of `key`'s replicas in the current membership?
    pub fn is_replica(&self, key: &str) -> bool {
        is_replica(key, self.members(), self.replicas, &self.me)
    }

    /// Does an acquirer that names `theirs` as `key`'s replicas see the same ones as this
    /// node? Order aside: both rank by the same hash.
    pub fn agrees(&self, key: &str, theirs: &[String]) -> bool {
        let ours = super::rendezvous::replicas(key, self.members(), self.replicas);
        ours.len() == theirs.len() && ours.iter().all(|m| theirs.iter().any(|t| t == m))
    }

    /// May this replica create `key` at `now` (or trust a stale record of it)? `floor` is what
    /// a new key's token starts from.
    pub fn creation(&self, key: &str, now: Instant, floor: u64) -> Creation {
        let Some(since) = self.since(key) else {
            return Creation::Quarantined {
                remaining: self.quarantine,
            };
        };
        let ready = since + self.quarantine;
        if ready > now {
            Creation::Quarantined {
                remaining: ready - now,
            }
        } else {
            Creation::Allowed { floor }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_secs(10);

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn allowed(c: Creation) -> bool {
        matches!(c, Creation::Allowed { .. })
    }

    #[test]
    fn a_new_replica_waits_one_quarantine() {
        let t0 = Instant::now();
        let mut r = Responsibility::new("a", 3, Q);
        assert!(!allowed(r.creation("k", t0, 1)));
        r.observe(t0, names(&["a", "b", "c"]), true);
        assert_eq!(
            r.creation("k", t0 + Duration::from_secs(4), 1),
            Creation::Quarantined {
                remaining: Duration::from_secs(6)
            }
        );
        assert!(allowed(r.creation("k", t0 + Q, 1)));
    }

    #[test]
    fn moving_into_a_keys_replicas_restarts_the_wait_for_that_key_only() {
        let t0 = Instant::now();
        let mut r = Responsibility::new("d", 3, Q);
        let all = names(&["a", "b", "c", "d", "e"]);
        r.observe(t0, all.clone(), true);
        let t1 = t0 + Q * 2;
        // Find a key d is not a replica of but becomes one when its first replica leaves.
        let key = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| {
                let reps = super::super::rendezvous::replicas(k, &all, 3);
                !reps.contains(&"d") && {
                    let rest: Vec<String> = all.iter().filter(|m| *m != reps[0]).cloned().collect();
                    is_replica(k, &rest, 3, "d")
                }
            })
            .expect("some key moves to d");
        let first = super::super::rendezvous::replicas(&key, &all, 3)[0].to_string();
        let stayer = (0..1000)
            .map(|i| format!("s{i}"))
            .find(|k| {
                is_replica(k, &all, 3, "d") && {
                    let rest: Vec<String> = all.iter().filter(|m| **m != first).cloned().collect();
                    is_replica(k, &rest, 3, "d")
                }
            })
            .expect("some key stays with d");
        r.observe(
            t1,
            all.iter().filter(|m| **m != first).cloned().collect(),
            true,
        );
        assert!(r.is_replica(&key));
        assert!(!allowed(r.creation(&key, t1 + Q / 2, 1)));
        assert!(allowed(r.creation(&stayer, t1 + Q / 2, 1)));
        assert!(allowed(r.creation(&key, t1 + Q, 1)));
    }

    #[test]
    fn a_spell_without_a_majority_restarts_the_run_and_stales_older_records() {
        let t0 = Instant::now();
        let mut r = Responsibility::new("a", 3, Q);
        let two = names(&["a", "b"]);
        r.observe(t0, two.clone(), true);
        assert_eq!(r.since("k"), Some(t0));
        // Partitioned: the same members in view, but no majority of the cluster.
        let t1 = t0 + Q * 2;
        r.observe(t1, two.clone(), false);
        assert_eq!(r.since("k"), None);
        assert!(!allowed(r.creation("k", t1, 1)));
        // Healed: a new run, and a whole quarantine before records from before it count.
        let t2 = t1 + Q * 3;
        r.observe(t2, names(&["a", "b", "c", "d", "e"]), true);
        if r.is_replica("k") {
            assert_eq!(r.since("k"), Some(t2));
        }
        assert!(!allowed(r.creation("k", t2 + Q / 2, 1)));
    }

    #[test]
    fn only_an_acquirer_that_sees_the_same_replicas_is_agreed_with() {
        let t0 = Instant::now();
        let all = names(&["a", "b", "c", "d"]);
        let mut r = Responsibility::new("a", 3, Q);
        r.observe(t0, all.clone(), true);
        let key = (0..100)
            .map(|i| format!("k{i}"))
            .find(|k| r.is_replica(k))
            .unwrap();
        let mut ours: Vec<String> = super::super::rendezvous::replicas(&key, &all, 3)
            .into_iter()
            .map(String::from)
            .collect();
        ours.reverse();
        assert!(r.agrees(&key, &ours), "order does not matter");
        // An acquirer that sees only this node would count one vote as a majority.
        assert!(!r.agrees(&key, &names(&["a"])));
        ours[0] = "z".into();
        assert!(!r.agrees(&key, &ours));
    }

    #[test]
    fn old_memberships_are_forgotten_after_the_window() {
        let t0 = Instant::now();
        let mut r = Responsibility::new("a", 1, Q);
        for i in 0..50u64 {
            let mut m = names(&["a"]);
            m.push(format!("x{i}"));
            r.observe(t0 + Duration::from_secs(i * 20), m, true);
        }
        assert!(r.history.len() <= 2);
    }
}
