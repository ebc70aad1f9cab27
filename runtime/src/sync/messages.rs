//! What acquirers and the `colony.lock` replica service say to each other.
//!
//! Durations travel as milliseconds: each side measures them on its own monotonic clock, so
//! no instant ever crosses the wire.

use serde::{Deserialize, Serialize};

use crate::message::Message;
use colony_actors::lock;

/// The per-node lock replica service. Reserved, not advertised: acquirers address replicas by
/// the address gossip gives for each member.
pub(crate) const LOCK_SERVICE: &str = "colony.lock";

/// Longest key accepted, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 1024;

/// Who holds or asks for a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owner {
    pub(crate) node: String,
    pub(crate) id: u64,
}

impl From<&Owner> for lock::Owner {
    fn from(o: &Owner) -> Self {
        lock::Owner {
            node: o.node.clone(),
            id: o.id,
        }
    }
}

impl From<lock::Owner> for Owner {
    fn from(o: lock::Owner) -> Self {
        Owner {
            node: o.node,
            id: o.id,
        }
    }
}

/// Grant me `key` for `ttl_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Acquire {
    pub(crate) key: String,
    pub(crate) owner: Owner,
    pub(crate) ttl_ms: u64,
    /// The key's replicas as the acquirer sees them: a replica that sees others does not
    /// vote, so a majority is always one of a replica set the voters agree on.
    pub(crate) replicas: Vec<String>,
}

/// A replica's vote, or why it does not vote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Ballot {
    Granted {
        token: u64,
    },
    /// Granted by creating the key's state (the replica did not know it, or only from a stale
    /// record): counted only once every replica has answered and none reports a running lease.
    Created {
        token: u64,
    },
    Held {
        owner: Owner,
        token: u64,
        remaining_ms: u64,
    },
    Quarantined {
        remaining_ms: u64,
    },
    Full,
    /// This owner's release arrived first.
    Withdrawn,
    /// The replica is not one of the key's replicas in its own view of the cluster.
    NotReplica,
    /// The replica does not see a majority of the cluster's members.
    NoQuorum {
        live: usize,
        known: usize,
    },
}

impl Message for Acquire {
    type Reply = Ballot;
    const ENDPOINT: &'static str = "Lock.Acquire";
}

/// I settled on `token`: record it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Confirm {
    pub(crate) key: String,
    pub(crate) owner: Owner,
    pub(crate) token: u64,
}

impl Message for Confirm {
    type Reply = bool;
    const ENDPOINT: &'static str = "Lock.Confirm";
}

/// Extend my lease on `key` (token `token`) by `ttl_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Renew {
    pub(crate) key: String,
    pub(crate) owner: Owner,
    pub(crate) token: u64,
    pub(crate) ttl_ms: u64,
    /// The key's replicas as the holder sees them (see [`Acquire::replicas`]).
    pub(crate) replicas: Vec<String>,
}

/// A replica's answer to a renewal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RenewAnswer {
    Renewed,
    Taken {
        owner: Owner,
    },
    /// Cannot vouch: no record and no right to adopt one, not a replica, or no quorum.
    Unknown,
}

impl Message for Renew {
    type Reply = RenewAnswer;
    const ENDPOINT: &'static str = "Lock.Renew";
}

/// I give `key` up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Release {
    pub(crate) key: String,
    pub(crate) owner: Owner,
}

impl Message for Release {
    type Reply = ();
    const ENDPOINT: &'static str = "Lock.Release";
}
