//! One replica's lock table: who holds each key, until when, and the last fencing token.
//!
//! The table takes the time as an argument and decides; it never reads a clock and never
//! waits. Whether it may create state for a key it has never seen is decided outside (see
//! [`Responsibility`](super::Responsibility)) and passed in as a [`Creation`].

use std::collections::HashMap;
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
    /// Last request about the key, for [`LockTable::sweep`].
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

/// A replica's answer to an acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vote {
    /// Granted, with the token this replica proposes (the acquirer takes the largest).
    Granted {
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

/// One replica's leases, per key.
#[derive(Debug, Default)]
pub struct LockTable {
    records: HashMap<String, Record>,
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
        creation: Creation,
    ) -> Vote {
        let Some(record) = self.records.get_mut(key) else {
            let floor = match creation {
                Creation::Allowed { floor } => floor.max(1),
                Creation::Quarantined { remaining } => return Vote::Quarantined { remaining },
            };
            if self.records.len() >= MAX_KEYS {
                return Vote::Full;
            }
            self.records.insert(
                key.to_string(),
                Record {
                    lease: Some(Lease {
                        owner: owner.clone(),
                        token: floor,
                        expires: now + ttl,
                    }),
                    token: floor,
                    touched: now,
                },
            );
            return Vote::Granted { token: floor };
        };
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
        record.token += 1;
        record.lease = Some(Lease {
            owner: owner.clone(),
            token: record.token,
            expires: now + ttl,
        });
        Vote::Granted {
            token: record.token,
        }
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
    /// adopts the lease if `creation` allows (so a replica that replaced a dead one learns the
    /// holder from its renewals); a lease expired here is renewed only if nobody took it since.
    pub fn renew(
        &mut self,
        key: &str,
        owner: &Owner,
        token: u64,
        ttl: Duration,
        now: Instant,
        creation: Creation,
    ) -> Renewal {
        let Some(record) = self.records.get_mut(key) else {
            if matches!(creation, Creation::Quarantined { .. }) || self.records.len() >= MAX_KEYS {
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
            _ if token > record.token && matches!(creation, Creation::Allowed { .. }) => {
                *record = adopted(owner, token, ttl, now);
                Renewal::Renewed
            }
            _ => Renewal::Unknown,
        }
    }

    /// `owner` gives the key up. Releasing what it does not hold (already expired and taken,
    /// or never granted here) changes nothing.
    pub fn release(&mut self, key: &str, owner: &Owner, now: Instant) {
        if let Some(record) = self.records.get_mut(key) {
            if record.lease.as_ref().is_some_and(|l| l.owner == *owner) {
                record.lease = None;
                record.touched = now;
            }
        }
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
    const OPEN: Creation = Creation::Allowed { floor: 1000 };

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
            t.grant("k", &owner(1), TTL, now, OPEN),
            Vote::Granted { token: 1000 }
        );
        assert!(matches!(
            t.grant("k", &owner(2), TTL, now, OPEN),
            Vote::Held { token: 1000, .. }
        ));
        t.release("k", &owner(1), now);
        assert_eq!(
            t.grant("k", &owner(2), TTL, now, OPEN),
            Vote::Granted { token: 1001 }
        );
    }

    #[test]
    fn an_expired_lease_is_granted_to_the_next_owner() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("k", &owner(1), TTL, now, OPEN);
        let later = now + TTL;
        assert_eq!(
            t.grant("k", &owner(2), TTL, later, OPEN),
            Vote::Granted { token: 1001 }
        );
        // The old holder cannot renew what another owner holds now.
        assert_eq!(
            t.renew("k", &owner(1), 1000, TTL, later, OPEN),
            Renewal::Taken { owner: owner(2) }
        );
    }

    #[test]
    fn a_retried_acquisition_gets_the_same_token() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("k", &owner(1), TTL, now, OPEN);
        assert_eq!(
            t.grant("k", &owner(1), TTL, now, OPEN),
            Vote::Granted { token: 1000 }
        );
    }

    #[test]
    fn quarantine_refuses_unknown_keys_but_not_known_ones() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("known", &owner(1), TTL, now, OPEN);
        t.release("known", &owner(1), now);
        let q = Creation::Quarantined {
            remaining: Duration::from_secs(3),
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
        t.grant("k", &owner(1), TTL, now, OPEN);
        assert!(t.confirm("k", &owner(1), 5000));
        assert!(!t.confirm("k", &owner(9), 6000));
        t.release("k", &owner(1), now);
        assert_eq!(
            t.grant("k", &owner(2), TTL, now, OPEN),
            Vote::Granted { token: 5001 }
        );
    }

    #[test]
    fn renewal_adopts_on_a_fresh_replica_and_refuses_stale_tokens() {
        let mut t = LockTable::default();
        let now = Instant::now();
        assert_eq!(
            t.renew("k", &owner(1), 77, TTL, now, OPEN),
            Renewal::Renewed
        );
        assert_eq!(t.holder("k", now).map(|l| l.token), Some(77));
        t.release("k", &owner(1), now);
        // A holder whose token is not newer than what this replica knows is stale.
        assert_eq!(
            t.renew("k", &owner(2), 77, TTL, now, OPEN),
            Renewal::Unknown
        );
        assert_eq!(
            t.renew("k", &owner(2), 78, TTL, now, OPEN),
            Renewal::Renewed
        );
    }

    #[test]
    fn an_expired_lease_renews_if_nobody_took_it() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("k", &owner(1), TTL, now, OPEN);
        let later = now + TTL * 2;
        assert!(t.holder("k", later).is_none());
        assert_eq!(
            t.renew("k", &owner(1), 1000, TTL, later, OPEN),
            Renewal::Renewed
        );
        assert!(t.holder("k", later).is_some());
    }

    #[test]
    fn sweep_forgets_idle_free_keys_only() {
        let mut t = LockTable::default();
        let now = Instant::now();
        t.grant("held", &owner(1), Duration::from_secs(100), now, OPEN);
        t.grant("free", &owner(2), TTL, now, OPEN);
        t.release("free", &owner(2), now);
        assert_eq!(
            t.sweep(now + Duration::from_secs(60), Duration::from_secs(30)),
            1
        );
        assert_eq!(t.len(), 1);
        assert!(t.holder("held", now).is_some());
    }
}
