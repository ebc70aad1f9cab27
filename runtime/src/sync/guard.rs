//! A held lock: its fencing token, its renewal, its release.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colony_actors::lock::{self, RenewTally, Renewal, Renewed};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::messages::{Owner, Release, Renew, RenewAnswer};
use super::round::ask_all;
use super::validity;
use crate::call::Client;
use crate::error::Error;

/// A lease on a key, granted by a majority of its replicas. Renewed in the background every
/// third of its TTL while the guard lives; released when dropped (or by
/// [`release`](Self::release), which says whether the replicas heard).
///
/// Holding the guard does not prove the lease still runs: a process paused longer than the
/// TTL (GC, SIGSTOP, a VM migration) wakes up holding a guard whose lease another holder may
/// have been granted since. Pass [`token`](Self::token) to every resource the lock protects
/// and have it refuse a token smaller than the largest it has seen (docs/locks.md).
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    held: Arc<Held>,
    renewer: Option<JoinHandle<()>>,
}

struct Held {
    client: Client,
    key: String,
    owner: Owner,
    token: u64,
    ttl: Duration,
    /// Until when this holder may count on the lease, by its own clock.
    valid_until: Mutex<Instant>,
    lost: CancellationToken,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.held.key)
            .field("token", &self.held.token)
            .field("held", &self.is_held())
            .finish()
    }
}

impl LockGuard {
    /// A guard for a lease granted to a round that asked at `asked`.
    pub(super) fn start(
        client: Client,
        key: String,
        owner: Owner,
        token: u64,
        ttl: Duration,
        asked: Instant,
    ) -> Self {
        let valid_until = asked + validity(ttl);
        let held = Arc::new(Held {
            client,
            key,
            owner,
            token,
            ttl,
            valid_until: Mutex::new(valid_until),
            lost: CancellationToken::new(),
        });
        let renewer = tokio::spawn(renew(held.clone(), asked));
        Self {
            held,
            renewer: Some(renewer),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.held.key
    }

    /// The fencing token: larger than every token granted for this key before. A resource
    /// that refuses writes with a token smaller than the largest it has seen cannot be
    /// written by a holder whose lease has ended.
    pub fn token(&self) -> u64 {
        self.held.token
    }

    /// The lease as granted (renewals extend it by this much each time).
    pub fn ttl(&self) -> Duration {
        self.held.ttl
    }

    /// True while the lease runs by this holder's clock and has not been lost. A check, not a
    /// guarantee: the answer can be stale by the time it is used (see the type's docs).
    pub fn is_held(&self) -> bool {
        !self.held.lost.is_cancelled() && Instant::now() < self.valid_until()
    }

    /// When the lease ends unless renewed, by this holder's clock.
    pub fn valid_until(&self) -> Instant {
        *self
            .held
            .valid_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when the lease ends: not renewed in time (cut off from a majority of the
    /// replicas), taken by another holder, or released.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.held.lost.clone().cancelled_owned()
    }

    /// Releases the lock and waits until a majority of its replicas have heard; an error says
    /// how many did (the others free the key when the lease runs out).
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        self.held.lost.cancel();
        release(&self.held).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(renewer) = self.renewer.take() else {
            return;
        };
        renewer.abort();
        self.held.lost.cancel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let held = self.held.clone();
            runtime.spawn(async move {
                if let Err(e) = release(&held).await {
                    tracing::debug!(key = %held.key, error = %e, "lock released on drop, partly");
                }
            });
        }
    }
}

async fn release(held: &Held) -> Result<(), Error> {
    let locks = &held.client.caller.locks;
    let (_, replicas) = locks.replicas_of(&held.key);
    let need = lock::majority(replicas.len());
    let mut heard = 0;
    let request = Release {
        key: held.key.clone(),
        owner: held.owner.clone(),
    };
    let done = ask_all(
        &held.client,
        &replicas,
        &request,
        locks.settings.request_timeout,
        |_, answer| {
            heard += usize::from(answer.is_ok());
            (heard >= need).then_some(())
        },
    )
    .await
    .0;
    match done {
        Some(()) => Ok(()),
        None => Err(Error::unavailable(format!(
            "lock {:?} released at {heard} of {} replicas; the others free it when the lease runs out",
            held.key,
            replicas.len()
        ))),
    }
}

/// Renews every third of the TTL; after a failed round, again soon, until the lease would
/// run out. Renewals go to the key's replicas in the current view, so a replica that replaced
/// a departed one learns the holder from them.
async fn renew(held: Arc<Held>, asked: Instant) {
    let every = held.ttl / 3;
    let retry = (every / 4).min(Duration::from_millis(200));
    let locks = &held.client.caller.locks;
    // The schedule counts from when the lease was asked for, as its validity does.
    let mut next = asked + every;
    loop {
        let valid_until = *held.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        tokio::time::sleep_until(next.min(valid_until).into()).await;
        let asked = Instant::now();
        if asked >= valid_until {
            lose(
                &held,
                "no majority of its replicas renewed it before it ran out",
            );
            return;
        }
        let (names, replicas) = locks.replicas_of(&held.key);
        let request = Renew {
            key: held.key.clone(),
            owner: held.owner.clone(),
            token: held.token,
            ttl_ms: held.ttl.as_millis() as u64,
            replicas: names,
        };
        let mut tally = RenewTally::new(replicas.len());
        let timeout = locks.settings.request_timeout.min(valid_until - asked);
        let outcome = ask_all(&held.client, &replicas, &request, timeout, |_, answer| {
            tally.add(answer.ok().map(renewal_of))
        })
        .await
        .0
        .unwrap_or(Renewed::Undecided);
        match outcome {
            Renewed::Yes => {
                *held.valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    asked + validity(held.ttl);
                next = asked + every;
            }
            Renewed::Lost { owner } => {
                lose(&held, &format!("taken by node {}", owner.node));
                return;
            }
            Renewed::Undecided => next = Instant::now() + retry,
        }
    }
}

fn renewal_of(answer: RenewAnswer) -> Renewal {
    match answer {
        RenewAnswer::Renewed => Renewal::Renewed,
        RenewAnswer::Taken { owner } => Renewal::Taken {
            owner: (&owner).into(),
        },
        RenewAnswer::Unknown => Renewal::Unknown,
    }
}

fn lose(held: &Held, why: &str) {
    tracing::warn!(key = %held.key, token = held.token, "lock lost: {why}");
    held.lost.cancel();
}
