//! Leader election on top of locks, and a watch of the leader for everyone else.
//!
//! Leadership of `name` is the lock `colony.leader/<name>`. The leader also writes
//! `leader:<name>` = its token into its own gossip state, so observers learn who leads from
//! their gossip view with no request: eventually consistent (a few gossip rounds), advisory
//! (the lock, and its token, are the authority).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::guard::LockGuard;
use crate::error::{Code, Error};
use crate::membership::SharedView;
use crate::node::Shared;

/// Gossip key prefix of a leader's announcement.
pub(crate) const LEADER_PREFIX: &str = "leader:";
/// Lock key prefix of an election.
const LOCK_PREFIX: &str = "colony.leader/";
/// How long one acquisition round waits before the candidate asks again.
const CANDIDATE_WAIT: Duration = Duration::from_secs(3600);

/// The leader of an election, as gossip tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// The leading node's name.
    pub node: String,
    /// Where it serves.
    pub addr: SocketAddr,
    /// Its leadership's fencing token.
    pub token: u64,
}

/// Leaders announced in one node's gossip state: `(election, token)` pairs.
pub(crate) fn leaders_in<'a>(
    keys: impl Iterator<Item = (&'a str, &'a str)>,
) -> impl Iterator<Item = (&'a str, u64)> {
    keys.filter_map(|(k, v)| Some((k.strip_prefix(LEADER_PREFIX)?, v.parse().ok()?)))
}

/// A candidacy: `.ttl(..)`, then `.await` until this node leads.
///
/// ```no_run
/// # async fn f(node: colony::Node) -> Result<(), colony::Error> {
/// let leadership = node.elect("scheduler").await?;
/// tokio::select! {
///     _ = leadership.lost() => println!("no longer the leader"),
///     _ = async { /* lead: schedule jobs with leadership.token() */ } => {}
/// }
/// # Ok(()) }
/// ```
#[must_use = "a candidacy runs only when awaited"]
pub struct Election {
    shared: Arc<Shared>,
    name: String,
    ttl: Duration,
}

impl Election {
    pub(crate) fn new(shared: Arc<Shared>, name: String) -> Self {
        Self {
            shared,
            name,
            ttl: Duration::from_secs(10),
        }
    }

    /// The leadership's lease (default 10 s): a leader cut off from the cluster, or paused,
    /// is replaced within it, plus failure detection.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Waits until this node leads. Errors only for a bad name or TTL.
    pub async fn campaign(self) -> Result<Leadership, Error> {
        let key = format!("{LOCK_PREFIX}{}", self.name);
        let client = crate::call::Client::new(self.shared.caller.clone());
        let guard = loop {
            match client
                .lock(key.clone())
                .ttl(self.ttl)
                .wait(CANDIDATE_WAIT)
                .acquire()
                .await
            {
                Ok(guard) => break guard,
                Err(e) if e.code() == Code::BadRequest => return Err(e),
                Err(e) => tracing::debug!(election = %self.name, error = %e, "still a candidate"),
            }
        };
        let announcement = format!("{LEADER_PREFIX}{}", self.name);
        let token = guard.token().to_string();
        self.shared.membership.set_key(&announcement, &token).await;
        tracing::info!(election = %self.name, token = guard.token(), "leading");
        // When the lease ends, the announcement goes, unless a newer leadership of this node
        // has replaced it meanwhile.
        let lost = guard.lost();
        let node = Arc::downgrade(&self.shared);
        let name = self.name.clone();
        tokio::spawn(async move {
            lost.await;
            tracing::info!(election = %name, "leadership ended");
            if let Some(node) = node.upgrade() {
                node.membership.delete_key_if(&announcement, &token).await;
            }
        });
        Ok(Leadership {
            guard,
            name: self.name,
        })
    }
}

impl IntoFuture for Election {
    type Output = Result<Leadership, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.campaign())
    }
}

/// This node leads an election while this lives (and its lease holds); dropping it resigns
/// (the lock's guard releases itself, its `lost()` fires and the announcement goes).
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    name: String,
}

impl Leadership {
    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This leadership's fencing token: larger than every earlier leader's. Pass it to
    /// whatever the leader writes, so a deposed leader's late writes are refused.
    pub fn token(&self) -> u64 {
        self.guard.token()
    }

    /// True while the lease runs (a check, not a guarantee: see [`LockGuard`]).
    pub fn is_leader(&self) -> bool {
        self.guard.is_held()
    }

    /// Resolves when leadership ends: lease lost, taken, or resigned.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.guard.lost()
    }

    /// Steps down now: the lock is released and the announcement withdrawn, so another
    /// candidate leads without waiting for the lease to run out.
    pub async fn resign(self) -> Result<(), Error> {
        self.guard.release().await
    }
}

/// Who leads an election, as this node's gossip view says, and a wait for changes.
#[derive(Debug, Clone)]
pub struct LeaderWatch {
    view: watch::Receiver<SharedView>,
    name: String,
    seen: Option<Leader>,
}

impl LeaderWatch {
    pub(crate) fn new(view: watch::Receiver<SharedView>, name: String) -> Self {
        let seen = view.borrow().leaders.get(&name).cloned();
        Self { view, name, seen }
    }

    /// The leader now, if any.
    pub fn current(&self) -> Option<Leader> {
        self.view.borrow().leaders.get(&self.name).cloned()
    }

    /// Waits until the leader differs from the one last returned (a new node, a new term, or
    /// none), and returns it. `None` also once the node has stopped.
    pub async fn changed(&mut self) -> Option<Leader> {
        loop {
            if self.view.changed().await.is_err() {
                return None;
            }
            let now = self
                .view
                .borrow_and_update()
                .leaders
                .get(&self.name)
                .cloned();
            if now != self.seen {
                self.seen = now.clone();
                return now;
            }
        }
    }
}
