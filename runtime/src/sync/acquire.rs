//! `client.lock(key).ttl(..).wait(..).await`: acquiring a lease from a majority of the key's
//! replicas.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use colony_actors::lock::{self, Answer, Decision, Refusal, Tally, Vote};

use super::guard::LockGuard;
use super::messages::{Acquire, Ballot, Confirm, Owner, Release, MAX_KEY_LEN};
use super::round::ask_all;
use super::validity;
use crate::call::Client;
use crate::error::{Code, Error};

/// Default lease: 10 s.
const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Retry backoff under contention: from 1 ms, doubling, up to 50 ms, with full jitter; a
/// waiter that has waited long (a candidate for leadership, say) backs off further, to a
/// twentieth of its wait so far and at most 1 s, so that idle waiters do not keep the
/// replicas busy.
const BACKOFF_FIRST: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(50);
const BACKOFF_LONG_WAIT: Duration = Duration::from_secs(1);

/// An acquisition being set up: `.ttl(..)`, `.wait(..)`, then `.await` (or
/// [`acquire`](LockRequest::acquire)).
///
/// ```no_run
/// # async fn f(node: colony::Node) -> Result<(), colony::Error> {
/// use std::time::Duration;
/// let guard = node
///     .lock("invoice-42")
///     .ttl(Duration::from_secs(10))   // the lease, renewed while the guard lives
///     .wait(Duration::from_secs(2))   // keep trying this long if it is held (0: try once)
///     .await?;
/// println!("holding with fencing token {}", guard.token());
/// guard.release().await?;             // or drop it
/// # Ok(()) }
/// ```
#[must_use = "a lock is acquired only when awaited"]
pub struct LockRequest {
    client: Client,
    key: String,
    ttl: Duration,
    wait: Duration,
}

impl LockRequest {
    pub(crate) fn new(client: Client, key: String) -> Self {
        Self {
            client,
            key,
            ttl: DEFAULT_TTL,
            wait: Duration::ZERO,
        }
    }

    /// The lease (default 10 s, at most the cluster's [`LockSettings::max_ttl`](super::LockSettings)).
    /// The guard renews it every third of it; a holder cut off from its replicas loses the
    /// lock within it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long to keep trying while another holds the key (default 0: one round). Each round
    /// also waits up to the request timeout for the replicas' answers.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Acquires the lock: `Conflict` if another holds it past the wait, `Unavailable` if no
    /// majority of its replicas can grant (partition, quarantine, replicas down), `BadRequest`
    /// for an empty or oversized key or a TTL the cluster does not grant.
    pub async fn acquire(self) -> Result<LockGuard, Error> {
        let locks = &self.client.caller.locks;
        if self.key.is_empty() || self.key.len() > MAX_KEY_LEN {
            return Err(Error::bad_request(format!(
                "lock key must be 1 to {MAX_KEY_LEN} bytes, got {}",
                self.key.len()
            )));
        }
        if self.ttl < Duration::from_millis(10) || self.ttl > locks.settings.max_ttl {
            return Err(Error::bad_request(format!(
                "lease of {:?} refused: from 10 ms to {:?} (LockSettings::max_ttl)",
                self.ttl, locks.settings.max_ttl
            )));
        }
        // A wait too long to represent is a wait without end.
        let deadline = Instant::now().checked_add(self.wait);
        let started = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        loop {
            // A new owner each round: the releases of a lost round, which may arrive late,
            // must not free what a later round of the same acquisition was granted.
            let owner = locks.owner();
            let (names, replicas) = locks.replicas_of(&self.key);
            let request = Acquire {
                key: self.key.clone(),
                owner: owner.clone(),
                ttl_ms: self.ttl.as_millis() as u64,
                replicas: names,
            };
            let asked = Instant::now();
            let mut tally = Tally::new(replicas.len());
            // A replica that refuses the request itself (a key or lease it does not accept)
            // ends the acquisition: retrying cannot help.
            let mut bad = None;
            let (decision, late) = ask_all(
                &self.client,
                &replicas,
                &request,
                locks.settings.request_timeout,
                |i, answer| {
                    if let Err(e) = &answer {
                        if e.code() == Code::BadRequest {
                            bad = Some(e.clone());
                        }
                    }
                    tally.add(i, answer_of(answer))
                },
            )
            .await;
            // Only with no replica at all: a node that has not heard of any server yet.
            let decision = decision.unwrap_or(Decision::Refused {
                refusal: Refusal::Unavailable {
                    reason: "no server node in view to hold locks (client-only nodes hold none)"
                        .into(),
                },
                granters: Vec::new(),
            });
            let refusal = match decision {
                Decision::Granted {
                    token,
                    confirm,
                    granters,
                } => {
                    // Grants still to come are this owner's too: released with the lock.
                    drop(late);
                    let confirmed = if confirm.is_empty() {
                        true
                    } else {
                        self.confirm(&replicas, &confirm, &granters, &owner, token)
                            .await
                    };
                    // A round slower than the lease (a slow replica, a long confirm) would hand
                    // out a guard that has already run out.
                    let valid_until = asked + validity(self.ttl);
                    if confirmed && Instant::now() < valid_until {
                        return Ok(LockGuard::start(
                            self.client.clone(),
                            self.key,
                            owner,
                            token,
                            self.ttl,
                            asked,
                        ));
                    }
                    let all: Vec<usize> = (0..replicas.len()).collect();
                    self.release_at(&replicas, &all, &owner);
                    Refusal::Unavailable {
                        reason: if confirmed {
                            "the round took longer than the lease".into()
                        } else {
                            "the token could not be confirmed by a majority".into()
                        },
                    }
                }
                Decision::Refused { refusal, granters } => {
                    self.release_at(&replicas, &granters, &owner);
                    // A replica that grants after the round was lost would hold the key for
                    // this owner until the lease ran out: free it as soon as its grant arrives.
                    let (client, replicas, release) = (
                        self.client.clone(),
                        replicas.clone(),
                        self.release_request(&owner),
                    );
                    // A call that timed out here may still be served there: free that too.
                    late.then(move |i, answer| {
                        let granted =
                            matches!(answer, Ok(Ballot::Granted { .. } | Ballot::Created { .. }));
                        if granted || answer.is_err() {
                            release_in_background(&client, vec![replicas[i]], release.clone());
                        }
                    });
                    refusal
                }
            };
            if let Some(bad) = bad {
                return Err(bad);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(error_of(&self.key, refusal));
            }
            let pause = backoff.mul_f64(colony_actors::selector::random_unit());
            let pause = deadline.map_or(pause, |d| pause.min(d - now));
            let cap = (started.elapsed() / 20).clamp(BACKOFF_MAX, BACKOFF_LONG_WAIT);
            backoff = (backoff * 2).min(cap);
            tokio::time::sleep(pause).await;
        }
    }

    /// Tells the granters that proposed less than `token` to record it; true if a majority of
    /// the replicas then hold `token`.
    async fn confirm(
        &self,
        replicas: &[SocketAddr],
        confirm: &[usize],
        granters: &[usize],
        owner: &Owner,
        token: u64,
    ) -> bool {
        let targets: Vec<_> = confirm.iter().map(|&i| replicas[i]).collect();
        let request = Confirm {
            key: self.key.clone(),
            owner: owner.clone(),
            token,
        };
        let mut holding = granters.len() - confirm.len();
        let need = lock::majority(replicas.len());
        let timeout = self.client.caller.locks.settings.request_timeout;
        ask_all(&self.client, &targets, &request, timeout, |_, answer| {
            holding += usize::from(matches!(answer, Ok(true)));
            (holding >= need).then_some(())
        })
        .await
        .0
        .is_some()
            || holding >= need
    }

    /// Frees the replicas that granted a round the acquirer did not win, without waiting.
    fn release_at(&self, replicas: &[SocketAddr], granters: &[usize], owner: &Owner) {
        let targets = granters.iter().map(|&i| replicas[i]).collect();
        release_in_background(&self.client, targets, self.release_request(owner));
    }
}

/// Sends `request` to `targets` on a task of its own; answers are not awaited.
fn release_in_background(client: &Client, targets: Vec<SocketAddr>, request: Release) {
    if targets.is_empty() {
        return;
    }
    let client = client.clone();
    let timeout = client.caller.locks.settings.request_timeout;
    tokio::spawn(async move {
        ask_all(&client, &targets, &request, timeout, |_, _| None::<()>).await;
    });
}

impl LockRequest {
    fn release_request(&self, owner: &Owner) -> Release {
        Release {
            key: self.key.clone(),
            owner: owner.clone(),
        }
    }
}

impl IntoFuture for LockRequest {
    type Output = Result<LockGuard, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.acquire())
    }
}

fn answer_of(answer: Result<Ballot, Error>) -> Answer {
    match answer {
        Ok(Ballot::Granted { token }) => Answer::Vote(Vote::Granted { token }),
        Ok(Ballot::Created { token }) => Answer::Vote(Vote::Created { token }),
        Ok(Ballot::Held {
            owner,
            token,
            remaining_ms,
        }) => Answer::Vote(Vote::Held {
            owner: (&owner).into(),
            token,
            remaining: Duration::from_millis(remaining_ms),
        }),
        Ok(Ballot::Quarantined { remaining_ms }) => Answer::Vote(Vote::Quarantined {
            remaining: Duration::from_millis(remaining_ms),
        }),
        Ok(Ballot::Full) => Answer::Vote(Vote::Full),
        Ok(Ballot::Withdrawn) => Answer::Vote(Vote::Withdrawn),
        Ok(Ballot::NotReplica) => {
            Answer::Failed("a replica does not count itself among the key's replicas".into())
        }
        Ok(Ballot::NoQuorum { live, known }) => Answer::Failed(format!(
            "a replica sees only {live} of {known} members live: no quorum (partitioned, or below LockSettings::min_quorum?)"
        )),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

fn error_of(key: &str, refusal: Refusal) -> Error {
    match refusal {
        Refusal::Held {
            owner,
            token,
            remaining,
        } => Error::new(
            Code::Conflict,
            format!(
                "lock {key:?} is held by node {} (token {token}, lease runs {remaining:?} more unless renewed)",
                owner.node
            ),
        ),
        Refusal::Quarantined { remaining } => Error::new(
            Code::Unavailable,
            format!(
                "lock {key:?}: its replicas are new to it and wait {remaining:?} more before granting (quarantine after a start or a membership change, see docs/locks.md)"
            ),
        ),
        Refusal::Unavailable { reason } => Error::new(
            Code::Unavailable,
            format!("lock {key:?}: no majority of its replicas can grant: {reason}"),
        ),
        Refusal::Split => Error::new(
            Code::Conflict,
            format!("lock {key:?} is contended: the replicas' votes split between acquirers"),
        ),
    }
}
