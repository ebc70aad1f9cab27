//! One replica's lock table: who holds each key, until when, and the last fencing token.
//!
//! The table takes the time as an argument and decides; it never reads a clock and never
//! waits. Whether it may create state for a key it has never seen, and since when its records
//! can be trusted, is decided outside (see [`Responsibility`](super::Responsibility)) and
//! passed in as a [`Standing`]: a record last updated before `since` is stale (the replica
//! was not one of the key's replicas with a majority in sight at some point after it), and is
//! answered like a key never seen, its token kept as a floor.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Who asked for a lease: a node and an id unique to one acquisition on it. Two acquisitions
/// of one key from one process are different owners.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The acquiring node's name.
    pub node: String,
    /// Unique per acquisition on that node.
    pub id: u64,
}

/// A lease as this replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its holder.
    pub owner: Owner,
    /// Its fencing token.
    pub token: u64,
    /// When this replica stops counting it (by this replica's clock).
    pub expires: Instant,
}

#[derive(Debug)]
struct Record {
    /// The last lease granted or adopted; kept after expiry until replaced or released, so
    /// its owner can still renew it if nobody else took the key meanwhile.
    lease: Option<Lease>,
    /// The largest token this replica granted or learned for the key.
    token: u64,
    /// Last grant or renewal of the key here: for [`LockTable::sweep`], and to tell a trusted
    /// record from a stale one.
    touched: Instant,
}

/// May this replica create state for a key it has no record of?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// Yes; a new key's first token is at least `floor` (the replica's wall clock in
    /// microseconds: larger than any token granted before the key's state was lost, as long as
    /// clocks agree within the quarantine).
    Allowed {
        /// The lowest token a new record may start from.
        floor: u64,
    },
    /// Not yet: the replica has not been one of the key's replicas for a whole quarantine, so
    /// a lease granted by replicas that held the key before may still be running.
    Quarantined {
        /// Until the replica may.
        remaining: Duration,
    },
}

/// What the replica's standing lets the table do with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Start of the replica's current run as one of the key's replicas with a majority in
    /// sight: records updated before it are stale.
    pub since: Instant,
    /// Whether a key it does not know (or knows only from a stale record) may be created.
    pub creation: Creation,
}

/// A replica's answer to an acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Granted, with the token this replica proposes (the acquirer takes the largest).
    Granted {
        /// The proposed fencing token.
        token: u64,
    },
    /// Granted by creating the key's state here: the replica did not know the key (or knew it
    /// only from a stale record). Another replica may still know a lease this one cannot, so
    /// the acquirer waits for every replica's answer before it counts such a grant.
    Created {
        /// The proposed fencing token.
        token: u64,
    },
    /// Another owner's lease is running here.
    Held {
        /// Its holder.
        owner: Owner,
        /// Its token.
        token: u64,
        /// How long it runs on, by this replica's clock.
        remaining: Duration,
    },
    /// The replica knows nothing of the key and may not create it yet.
    Quarantined {
        /// Until it may.
        remaining: Duration,
    },
    /// The table holds [`MAX_KEYS`] keys already.
    Full,
    /// This owner released the key before its request arrived here (requests travel on
    /// streams of their own, so a release can overtake the acquisition it ends): nothing is
    /// granted to it.
    Withdrawn,
}

/// A replica's answer to a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Extended by the TTL from now.
    Renewed,
    /// Another owner holds the key here: the renewer's lease is over.
    Taken {
        /// The new holder.
        owner: Owner,
    },
    /// This replica cannot vouch either way (it has no record and may not adopt one yet, or
    /// the key was granted past the renewer's token and has since been released).
    Unknown,
}

/// The most keys one replica keeps; a new key beyond them is refused with [`Vote::Full`].
pub const MAX_KEYS: usize = 1 << 20;

/// Releases remembered for owners that held nothing here when their release came: the most
/// recent this many.
const WITHDRAWN: usize = 4096;

/// One replica's leases, per key.
#[derive(Debug, Default)]
pub struct LockTable {
    records: HashMap<String, Record>,
    /// (key, owner) released before any grant to them here, as hashes (no allocation on the
    /// grant path; a collision costs one refused round, not safety), newest last.
    withdrawn: HashSet<(u64, u64)>,
    withdrawn_order: VecDeque<(u64, u64)>,
}

impl LockTable {
    /// An acquisition of `key` by `owner` for `ttl`. The same owner asking again (a retried
    /// request) gets its lease back, extended, with the same token.
    pub fn grant(
        &mut self,
        key: &str,
        owner: &Owner,
        ttl: Duration,
        now: Instant,
        standing: Standing,
    ) -> Vote {
        if self.is_withdrawn(key, owner) {
            return Vote::Withdrawn;
        }
        let stale_token = match self.records.get_mut(key) {
            Some(record) if record.touched >= standing.since => {
                record.touched = now;
                if let Some(lease) = &mut record.lease {
                    if lease.owner == *owner {
                        lease.expires = now + ttl;
                        return Vote::Granted { token: lease.token };
                    }
                    if lease.expires > now {
                        return Vote::Held {
                            owner: lease.owner.clone(),
                            token: lease.token,
                            remaining: lease.expires - now,
                        };
                    }
                }
                record.token = record.token.saturating_add(1);
                record.lease = Some(Lease {
                    owner: owner.clone(),
                    token: record.token,
                    expires: now + ttl,
                });
                return Vote::Granted {
                    token: record.token,
                };
            }
            Some(stale) => Some(stale.token),
            None => None,
        };
        let floor = match standing.creation {
            Creation::Allowed { floor } => floor.max(1),
            Creation::Quarantined { remaining } => return Vote::Quarantined { remaining },
        };
        if stale_token.is_none() && self.records.len() >= MAX_KEYS {
            return Vote::Full;
        }
        let token = stale_token.map_or(floor, |t| floor.max(t.saturating_add(1)));
        self.records
            .insert(key.to_string(), adopted(owner, token, ttl, now));
        Vote::Created { token }
    }

    /// The acquirer settled on `token` (the largest proposed): this replica records it, so
    /// the key's next token is larger. False if `owner` no longer holds the key here.
    pub fn confirm(&mut self, key: &str, owner: &Owner, token: u64) -> bool {
        let Some(record) = self.records.get_mut(key) else {
            return false;
        };
        match &mut record.lease {
            Some(lease) if lease.owner == *owner => {
                lease.token = lease.token.max(token);
                record.token = record.token.max(token);
                true
            }
            _ => false,
        }
    }

    /// `owner`, holding `token`, extends its lease by `ttl` from now. A replica with no record
    /// (or a stale one) adopts the lease if its standing allows creating the key and the token
    /// is newer than any it knows (so a replica that replaced a departed one learns the holder
    /// from its renewals); a lease expired here is renewed only if nobody took it since.
    pub fn renew(
        &mut self,
        key: &str,
        owner: &Owner,
        token: u64,
        ttl: Duration,
        now: Instant,
        standing: Standing,
    ) -> Renewal {
        if self.is_withdrawn(key, owner) {
            return Renewal::Unknown;
        }
        let may_adopt = matches!(standing.creation, Creation::Allowed { .. });
        let known = match self.records.get_mut(key) {
            Some(record) if record.touched >= standing.since => Some(record),
            Some(stale) => {
                if may_adopt && token > stale.token {
                    *stale = adopted(owner, token, ttl, now);
                    return Renewal::Renewed;
                }
                return Renewal::Unknown;
            }
            None => None,
        };
        let Some(record) = known else {
            if !may_adopt || self.records.len() >= MAX_KEYS {
                return Renewal::Unknown;
            }
            self.records
                .insert(key.to_string(), adopted(owner, token, ttl, now));
            return Renewal::Renewed;
        };
        record.touched = now;
        match &mut record.lease {
            Some(lease) if lease.owner == *owner => {
                lease.expires = now + ttl;
                lease.token = lease.token.max(token);
                record.token = record.token.max(token);
                Renewal::Renewed
            }
            Some(lease) if lease.expires > now => Renewal::Taken {
                owner: lease.owner.clone(),
            },
            // Free here, or another's expired lease: adopt only a token newer than any this
            // replica knows, which a stale holder cannot have.
            _ if token > record.token && may_adopt => {
                *record = adopted(owner, token, ttl, now);
                Renewal::Renewed
            }
            _ => Renewal::Unknown,
        }
    }

    /// `owner` gives the key up. Releasing what it does not hold here (expired and taken, or
    /// not granted yet because the release overtook the acquisition) remembers the owner, so a
    /// grant or a renewal that arrives after it is refused.
    pub fn release(&mut self, key: &str, owner: &Owner) {
        let held = self
            .records
            .get(key)
            .and_then(|r| r.lease.as_ref())
            .is_some_and(|l| l.owner == *owner);
        if held {
            // Not `touched`: a release says nothing about whether the record is current.
            if let Some(record) = self.records.get_mut(key) {
                record.lease = None;
            }
            return;
        }
        let entry = withdrawal(key, owner);
        if self.withdrawn.insert(entry) {
            self.withdrawn_order.push_back(entry);
            if self.withdrawn_order.len() > WITHDRAWN {
                if let Some(oldest) = self.withdrawn_order.pop_front() {
                    self.withdrawn.remove(&oldest);
                }
            }
        }
    }

    fn is_withdrawn(&self, key: &str, owner: &Owner) -> bool {
        !self.withdrawn.is_empty() && self.withdrawn.contains(&withdrawal(key, owner))
    }

    /// The lease running on `key` at `now`, if any.
    pub fn holder(&self, key: &str, now: Instant) -> Option<&Lease> {
        self.records
            .get(key)?
            .lease
            .as_ref()
            .filter(|l| l.expires > now)
    }

    /// Forgets keys with no running lease that nobody asked about for `idle`. A forgotten key
    /// starts again from the wall-clock floor of [`Creation::Allowed`], which is past its old
    /// tokens as long as grants came slower than one per microsecond. Returns how many went.
    pub fn sweep(&mut self, now: Instant, idle: Duration) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| {
            r.lease.as_ref().is_some_and(|l| l.expires > now) || now - r.touched < idle
        });
        before - self.records.len()
    }

    /// Keys with a record.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn withdrawal(key: &str, owner: &Owner) -> (u64, u64) {
    use crate::selector::stable_hash;
    (
        stable_hash(key.as_bytes()),
        stable_hash(owner.node.as_bytes()) ^ owner.id,
    )
}

fn adopted(owner: &Owner, token: u64, ttl: Duration, now: Instant) -> Record {
    Record {
        lease: Some(Lease {
            owner: owner.clone(),
            token,
            expires: now + ttl,
        }),
        token,
        touched: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    /// A replica in good standing since `since`, allowed to create keys from token 1000.
    fn open(since: Instant) -> Standing {
        Standing {
            since,
            creation: Creation::Allowed { floor: 1000 },
        }
    }

    fn owner(id: u64) -> Owner {
        Owner {
            node: "a".into(),
            id,
        }
    }

    #[test]
    fn a_key_is_held_until_released_then_the_next_token_is_larger() {
        let mut t = LockTable::default();
        let now = Instant::now();
        assert_eq!(
            t.grant("k", &owner(1), TTL, now, open(now)),
            Vote::Created { token: 1000 }
        );
        assert!(matches!(
            t.grant("k", &owner(2), TTL, now, open(now)),
            Vote::Held { token: 1000, .. }
        ));
        t.release("k", &owner(1));
        assert_eq!(
            t.grant("k", &owner(2), TTL, now, open(now)),
            Vote::Granted { token: 1001 }
        );
    }

    #[test]
    fn an_expired_lease_is_granted_to_the_next_owner() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("k", &owner(1), TTL, now, open(now));
        let later = now + TTL;
        assert_eq!(
            t.grant("k", &owner(2), TTL, later, open(now)),
            Vote::Granted { token: 1001 }
        );
        // The old holder cannot renew what another owner holds now.
        assert_eq!(
            t.renew("k", &owner(1), 1000, TTL, later, open(now)),
            Renewal::Taken { owner: owner(2) }
        );
    }

    #[test]
    fn a_retried_acquisition_gets_the_same_token() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("k", &owner(1), TTL, now, open(now));
        assert_eq!(
            t.grant("k", &owner(1), TTL, now, open(now)),
            Vote::Granted { token: 1000 }
        );
    }

    #[test]
    fn quarantine_refuses_unknown_keys_but_not_known_ones() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("known", &owner(1), TTL, now, open(now));
        t.release("known", &owner(1));
        let q = Standing {
            since: now,
            creation: Creation::Quarantined {
                remaining: Duration::from_secs(3),
            },
        };
        assert_eq!(
            t.grant("new", &owner(2), TTL, now, q),
            Vote::Quarantined {
                remaining: Duration::from_secs(3)
            }
        );
        assert_eq!(
            t.grant("known", &owner(2), TTL, now, q),
            Vote::Granted { token: 1001 }
        );
        // Nor does a quarantined replica adopt a lease it does not know.
        assert_eq!(t.renew("new", &owner(3), 5, TTL, now, q), Renewal::Unknown);
    }

    #[test]
    fn confirm_raises_the_token_so_the_next_grant_is_past_it() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("k", &owner(1), TTL, now, open(now));
        assert!(t.confirm("k", &owner(1), 5000));
        assert!(!t.confirm("k", &owner(9), 6000));
        t.release("k", &owner(1));
        assert_eq!(
            t.grant("k", &owner(2), TTL, now, open(now)),
            Vote::Granted { token: 5001 }
        );
    }

    #[test]
    fn renewal_adopts_on_a_fresh_replica_and_refuses_stale_tokens() {
        let mut t = LockTable::default();
        let now = Instant::now();
        assert_eq!(
            t.renew("k", &owner(1), 77, TTL, now, open(now)),
            Renewal::Renewed
        );
        assert_eq!(t.holder("k", now).map(|l| l.token), Some(77));
        t.release("k", &owner(1));
        // A holder whose token is not newer than what this replica knows is stale.
        assert_eq!(
            t.renew("k", &owner(2), 77, TTL, now, open(now)),
            Renewal::Unknown
        );
        assert_eq!(
            t.renew("k", &owner(2), 78, TTL, now, open(now)),
            Renewal::Renewed
        );
    }

    #[test]
    fn an_expired_lease_renews_if_nobody_took_it() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("k", &owner(1), TTL, now, open(now));
        let later = now + TTL * 2;
        assert!(t.holder("k", later).is_none());
        assert_eq!(
            t.renew("k", &owner(1), 1000, TTL, later, open(now)),
            Renewal::Renewed
        );
        assert!(t.holder("k", later).is_some());
    }

    #[test]
    fn a_stale_record_is_answered_like_an_unknown_key_with_its_token_as_a_floor() {
        let mut t = LockTable::default();
        let t0 = Instant::now();
        t.grant("k", &owner(1), TTL, t0, open(t0));
        // The replica lost its majority and regained it: its run restarts after the record.
        let t1 = t0 + Duration::from_secs(1);
        let quarantined = Standing {
            since: t1,
            creation: Creation::Quarantined {
                remaining: Duration::from_secs(5),
            },
        };
        assert!(matches!(
            t.grant("k", &owner(2), TTL, t1, quarantined),
            Vote::Quarantined { .. }
        ));
        // Its own stale lease is not renewed, nor taken as the key's state.
        assert_eq!(
            t.renew("k", &owner(1), 1000, TTL, t1, quarantined),
            Renewal::Unknown
        );
        // Once it may create the key, the stale token is a floor: past it, even with a lower
        // wall clock.
        let allowed = Standing {
            since: t1,
            creation: Creation::Allowed { floor: 10 },
        };
        assert_eq!(
            t.grant("k", &owner(2), TTL, t1, allowed),
            Vote::Created { token: 1001 }
        );
        // And from then on the record is trusted.
        assert!(matches!(
            t.grant("k", &owner(3), TTL, t1, allowed),
            Vote::Held { token: 1001, .. }
        ));
    }

    #[test]
    fn a_release_that_overtakes_its_acquisition_withdraws_it() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.release("k", &owner(1));
        assert_eq!(
            t.grant("k", &owner(1), TTL, now, open(now)),
            Vote::Withdrawn
        );
        assert_eq!(
            t.renew("k", &owner(1), 5000, TTL, now, open(now)),
            Renewal::Unknown
        );
        // Others are not affected.
        assert!(matches!(
            t.grant("k", &owner(2), TTL, now, open(now)),
            Vote::Created { .. }
        ));
    }

    #[test]
    fn sweep_forgets_idle_free_keys_only() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("held", &owner(1), Duration::from_secs(100), now, open(now));
        t.grant("free", &owner(2), TTL, now, open(now));
        t.release("free", &owner(2));
        assert_eq!(
            t.sweep(now + Duration::from_secs(60), Duration::from_secs(30)),
            1
        );
        assert_eq!(t.len(), 1);
        assert!(t.holder("held", now).is_some());
    }
}
