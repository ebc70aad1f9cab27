//! Distributed locks' decision logic, free of I/O and of clocks: what the runtime's lock
//! replicas (`runtime/src/sync/`) and acquirers decide with. The model is `docs/locks.md`.
//!
//! - [`replicas`]: rendezvous hashing picks the `r` members that hold a key's state;
//! - [`LockTable`]: one replica's leases and fencing tokens, per key;
//! - [`Responsibility`]: the quarantine rule, so a replica new to a key never grants it while
//!   a lease granted by the key's previous replicas may still run;
//! - [`Census`]: whether a replica sees a majority of the cluster (the smaller side of a
//!   partition never does, so it never grants);
//! - [`Tally`] and [`RenewTally`]: the acquirer counts votes; a strict [`majority`] of the
//!   key's replicas grants, and the lease's token is the largest they proposed.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use colony_actors::lock::{replicas, Answer, Creation, Decision, LockTable, Owner, Standing, Tally};
//!
//! let members: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
//! let holders = replicas("invoice-42", &members, 3);
//! assert_eq!(holders.len(), 3);
//!
//! // Three replicas vote on one acquisition.
//! let mut tables: Vec<LockTable> = (0..3).map(|_| LockTable::default()).collect();
//! let owner = Owner { node: "a".into(), id: 1 };
//! let now = Instant::now();
//! let mut tally = Tally::new(3);
//! let mut decision = None;
//! for (i, table) in tables.iter_mut().enumerate() {
//!     let standing = Standing { since: now, creation: Creation::Allowed { floor: 1_000 + i as u64 } };
//!     let vote = table.grant("invoice-42", &owner, Duration::from_secs(10), now, standing);
//!     decision = decision.or(tally.add(i, Answer::Vote(vote)));
//! }
//! // A new key: every replica created it, so every vote counts (a replica that knew of a
//! // running lease would have refused it). The token is the largest proposal; the replicas
//! // that proposed less are told.
//! assert_eq!(decision, Some(Decision::Granted { token: 1_002, confirm: vec![0, 1], granters: vec![0, 1, 2] }));
//! ```

mod census;
mod quorum;
mod rendezvous;
mod responsibility;
mod table;

pub use census::Census;
pub use quorum::{majority, Answer, Decision, Refusal, RenewTally, Renewed, Tally};
pub use rendezvous::{is_replica, replicas};
pub use responsibility::Responsibility;
pub use table::{Creation, Lease, LockTable, Owner, Renewal, Standing, Vote, MAX_KEYS};
