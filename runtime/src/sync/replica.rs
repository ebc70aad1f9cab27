//! The replica: one per server node, the `colony.lock` service over the node's lock table.
//!
//! The decisions are `colony_actors::lock`'s; this file feeds them the node's view of the
//! cluster (from the view task, as it changes, so the quarantine sees every membership) and
//! the requests (from the service's single instance, one at a time).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use colony_actors::lock::{self, Census, LockTable, Renewal, Responsibility, Standing, Vote};

use super::messages::{Acquire, Ballot, Confirm, Release, Renew, RenewAnswer, MAX_KEY_LEN};
use super::LockSettings;
use crate::context::Context;
use crate::error::Error;
use crate::membership::{Member, Role};
use crate::message::Handler;

/// How often, at most, idle keys are swept, and how long a free key stays idle before it goes.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
const SWEEP_IDLE: Duration = Duration::from_secs(600);

/// A replica's state: its table and what it knows of the cluster.
pub(crate) struct Replica {
    settings: LockSettings,
    table: LockTable,
    responsibility: Responsibility,
    census: Census,
    last_sweep: Instant,
}

impl Replica {
    pub(crate) fn new(me: &str, settings: LockSettings) -> Self {
        Self {
            responsibility: Responsibility::new(me, settings.replicas, settings.quarantine()),
            settings,
            table: LockTable::default(),
            census: Census::with_floor(settings.min_quorum.unwrap_or(0)),
            last_sweep: Instant::now(),
        }
    }

    /// The cluster changed: live servers and the ones leaving.
    pub(crate) fn view_changed(&mut self, members: &[Member], now: Instant) {
        let servers = members.iter().filter(|m| m.role == Role::Server);
        let live: Vec<String> = servers
            .clone()
            .filter(|m| !m.leaving)
            .map(|m| m.name.clone())
            .collect();
        self.census.observe(
            now,
            live.iter().map(String::as_str),
            servers.filter(|m| m.leaving).map(|m| m.name.as_str()),
        );
        let quorum = self.census.has_quorum();
        self.responsibility.observe(now, live, quorum);
    }

    /// This replica's standing on `key`, given the replicas the requester sees, or why it may
    /// not vote on it now.
    fn standing(
        &mut self,
        key: &str,
        replicas: &[String],
        now: Instant,
    ) -> Result<Standing, Ballot> {
        let forgotten = self.census.forget(now, self.settings.forget_after);
        if !forgotten.is_empty() {
            tracing::info!(members = ?forgotten, "lock census: no longer counting members silent for the forget period");
            // Forgetting can give this node a majority again: a new membership for the rule.
            let members = self.responsibility.members().to_vec();
            self.responsibility
                .observe(now, members, self.census.has_quorum());
        }
        if !self.census.has_quorum() {
            let (live, known) = self.census.counts();
            return Err(Ballot::NoQuorum { live, known });
        }
        let Some(since) = self.responsibility.since(key) else {
            return Err(Ballot::NotReplica);
        };
        if !self.responsibility.agrees(key, replicas) {
            return Err(Ballot::NotReplica);
        }
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Ok(Standing {
            since,
            creation: self.responsibility.creation(key, now, wall_us),
        })
    }

    fn key(key: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::bad_request(format!(
                "lock key must be 1 to {MAX_KEY_LEN} bytes, got {}",
                key.len()
            )));
        }
        Ok(())
    }

    fn ttl(&self, ttl_ms: u64) -> Result<Duration, Error> {
        let ttl = Duration::from_millis(ttl_ms);
        if ttl.is_zero() || ttl > self.settings.max_ttl {
            return Err(Error::bad_request(format!(
                "lease of {ttl:?} refused: this replica grants up to {:?} (LockSettings::max_ttl)",
                self.settings.max_ttl
            )));
        }
        Ok(ttl)
    }

    fn sweep(&mut self, now: Instant) {
        if now - self.last_sweep >= SWEEP_EVERY {
            self.last_sweep = now;
            self.table.sweep(now, SWEEP_IDLE);
        }
    }

    pub(crate) fn acquire(&mut self, req: &Acquire) -> Result<Ballot, Error> {
        Self::key(&req.key)?;
        let ttl = self.ttl(req.ttl_ms)?;
        let now = Instant::now();
        self.sweep(now);
        let standing = match self.standing(&req.key, &req.replicas, now) {
            Ok(standing) => standing,
            Err(refusal) => return Ok(refusal),
        };
        Ok(
            match self
                .table
                .grant(&req.key, &(&req.owner).into(), ttl, now, standing)
            {
                Vote::Granted { token } => Ballot::Granted { token },
                Vote::Created { token } => Ballot::Created { token },
                Vote::Held {
                    owner,
                    token,
                    remaining,
                } => Ballot::Held {
                    owner: owner.into(),
                    token,
                    remaining_ms: remaining.as_millis() as u64,
                },
                Vote::Quarantined { remaining } => Ballot::Quarantined {
                    remaining_ms: remaining.as_millis() as u64,
                },
                Vote::Full => Ballot::Full,
                Vote::Withdrawn => Ballot::Withdrawn,
            },
        )
    }

    pub(crate) fn renew(&mut self, req: &Renew) -> Result<RenewAnswer, Error> {
        Self::key(&req.key)?;
        let ttl = self.ttl(req.ttl_ms)?;
        let now = Instant::now();
        let Ok(standing) = self.standing(&req.key, &req.replicas, now) else {
            return Ok(RenewAnswer::Unknown);
        };
        let owner: lock::Owner = (&req.owner).into();
        Ok(
            match self
                .table
                .renew(&req.key, &owner, req.token, ttl, now, standing)
            {
                Renewal::Renewed => RenewAnswer::Renewed,
                Renewal::Taken { owner } => RenewAnswer::Taken {
                    owner: owner.into(),
                },
                Renewal::Unknown => RenewAnswer::Unknown,
            },
        )
    }
}

/// The `colony.lock` service's instance: requests, one at a time, into the shared replica.
pub(crate) struct LockService {
    pub(crate) replica: Arc<Mutex<Replica>>,
}

impl LockService {
    fn replica(&self) -> std::sync::MutexGuard<'_, Replica> {
        // A panic while holding the lock leaves the table as it was before the request: the
        // table's methods change nothing before they have decided.
        self.replica.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Handler<Acquire> for LockService {
    async fn handle(&mut self, req: Acquire, _: &Context) -> Result<Ballot, Error> {
        self.replica().acquire(&req)
    }
}

impl Handler<Confirm> for LockService {
    async fn handle(&mut self, req: Confirm, _: &Context) -> Result<bool, Error> {
        Ok(self
            .replica()
            .table
            .confirm(&req.key, &(&req.owner).into(), req.token))
    }
}

impl Handler<Renew> for LockService {
    async fn handle(&mut self, req: Renew, _: &Context) -> Result<RenewAnswer, Error> {
        self.replica().renew(&req)
    }
}

impl Handler<Release> for LockService {
    async fn handle(&mut self, req: Release, _: &Context) -> Result<(), Error> {
        self.replica().table.release(&req.key, &(&req.owner).into());
        Ok(())
    }
}
