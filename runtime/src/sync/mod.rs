//! Distributed locks and leader election, with no server to run: leases granted by a majority
//! of each key's replicas, fencing tokens, automatic renewal. The model (what holds under
//! partitions, pauses and clock drift) is `docs/locks.md`.
//!
//! ```text
//! Client::lock(key) -> LockRequest           acquire.rs   ttl, wait
//!  └ acquire: each round                      the key's replicas: rendezvous over live servers
//!     ├ Acquire to every replica at once      round.rs     ask_all: answers as they come
//!     │  └ colony.lock on each node           replica.rs   census, quarantine, LockTable
//!     ├ Tally: a majority grants              colony_actors::lock; token = largest proposed
//!     │   (Confirm it where it was smaller)
//!     └ refused: release stray grants, back off, again until the wait ends
//!  └ LockGuard                                guard.rs     renews every ttl/3 with a majority;
//!                                                          lost() when the lease ends; released on drop
//! Node::elect(name) -> Leadership             leader.rs    a lock on `colony.leader/<name>` +
//!                                                          `leader:<name>` in gossip for observers
//! ```

mod acquire;
mod guard;
mod leader;
pub(crate) mod messages;
mod replica;
mod round;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use acquire::LockRequest;
pub use guard::LockGuard;
pub(crate) use leader::leaders_in;
pub use leader::{Election, Leader, LeaderWatch, Leadership};

use crate::membership::{ClusterView, Registry, Role};
use messages::{Owner, LOCK_SERVICE};
use replica::{LockService, Replica};

/// The cluster's lock settings. Every node of a cluster must use the same ones.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LockSettings {
    /// The longest lease a replica grants (default 15 s). A replica new to a key waits this
    /// long (plus a 2 % drift margin and [`settle`](Self::settle)) before it creates the key:
    /// the quarantine that keeps a restarted or newly responsible replica from granting a
    /// lease that is still running.
    pub max_ttl: Duration,
    /// Replicas per key (default 3; a grant needs a strict majority of them).
    pub replicas: usize,
    /// How long a silent member is still counted in the census before a node that sees a
    /// majority without it stops counting it (default 60 s).
    pub forget_after: Duration,
    /// Time allowed for one replica to answer one request (default 2 s).
    pub request_timeout: Duration,
    /// Added to the quarantine: how much later than this node another node may see the same
    /// membership change (gossip lag, failure detection, reconnection after a heal). Until
    /// every node sees a change, a holder can still renew through the key's former replicas
    /// (default 2 s; a heal was measured to take up to 1.3 s to be seen everywhere).
    pub settle: Duration,
    /// A static quorum, as Akka's split-brain resolver has: if set, a replica votes only while
    /// it sees at least this many live servers, whatever it remembers of the cluster. The
    /// census starts empty when a node restarts, so without it, nodes that all restart while
    /// cut off together count only each other, and see a majority (default `None`; set it to
    /// a majority of the cluster's planned size to close that case).
    pub min_quorum: Option<usize>,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(15),
            replicas: 3,
            forget_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(2),
            settle: Duration::from_secs(2),
            min_quorum: None,
        }
    }
}

impl LockSettings {
    /// The quarantine: the longest lease, plus the drift margin, plus the settling time.
    pub(crate) fn quarantine(&self) -> Duration {
        self.max_ttl + self.max_ttl / 50 + self.settle
    }
}

/// How long a holder counts its lease from the moment it asked: the TTL minus the drift
/// margin (2 %) and a millisecond, so the holder always stops believing before any replica
/// that granted it stops counting the lease.
pub(crate) fn validity(ttl: Duration) -> Duration {
    ttl.saturating_sub(ttl / 50 + Duration::from_millis(1))
}

/// A node's lock machinery: its replica (server nodes) and what its acquirers need.
pub(crate) struct Locks {
    pub(crate) settings: LockSettings,
    name: String,
    replica: Option<Arc<Mutex<Replica>>>,
    next_owner: AtomicU64,
    registry: Registry,
}

impl Locks {
    pub(crate) fn new(name: &str, settings: LockSettings, registry: Registry, role: Role) -> Self {
        // Owner ids must not repeat across incarnations of a node name: a replica takes the
        // same owner asking again for a retry and hands its lease back.
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            Instant::now(),
        );
        Self {
            replica: (role == Role::Server)
                .then(|| Arc::new(Mutex::new(Replica::new(name, settings)))),
            settings,
            name: name.to_string(),
            next_owner: AtomicU64::new(seed >> 1),
            registry,
        }
    }

    /// Feeds the replica every membership, as it changes: the quarantine must see them all.
    pub(crate) fn view_changed(&self, view: &ClusterView) {
        if let Some(replica) = &self.replica {
            replica
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .view_changed(&view.members, Instant::now());
        }
    }

    /// The replicas of `key` in this node's current view, best first: their names (sent with
    /// every request, so that a replica whose view differs does not vote) and addresses.
    pub(crate) fn replicas_of(&self, key: &str) -> (Vec<String>, Vec<SocketAddr>) {
        let view = self.registry.current();
        let live: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.role == Role::Server && !m.leaving)
            .map(|m| m.name.as_str())
            .collect();
        colony_actors::lock::replicas(key, &live, self.settings.replicas)
            .into_iter()
            .filter_map(|name| view.members.iter().find(|m| m.name == name))
            .map(|m| (m.name.clone(), m.addr))
            .unzip()
    }

    fn owner(&self) -> Owner {
        Owner {
            node: self.name.clone(),
            id: self.next_owner.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Starts this node's replica service, `colony.lock` (server nodes only).
pub(crate) async fn serve(shared: &Arc<crate::node::Shared>) -> Result<(), crate::Error> {
    let Some(replica) = shared.caller.locks.replica.clone() else {
        return Ok(());
    };
    shared
        .caller
        .locks
        .view_changed(&shared.membership.registry().current());
    crate::service::ServiceBuilder::new(shared.clone(), LOCK_SERVICE.into())
        .unadvertised()
        .handler::<messages::Acquire>()
        .handler::<messages::Confirm>()
        .handler::<messages::Renew>()
        .handler::<messages::Release>()
        .spawn(move || LockService {
            replica: replica.clone(),
        })
        .await
        .map(|_| ())
}
