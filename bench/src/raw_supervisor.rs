//! The raw ractor peers of the supervision scenarios, written as a ractor user would by hand.
//!
//! - [`RawSupervised`]: a supervisor actor with one linked child; when the child panics, the
//!   supervisor's `handle_supervisor_evt` spawns a fresh one at once (no backoff, no budget) and
//!   publishes it in a `Mutex` its callers read before every call. That is all colony's
//!   supervisor does on the restart path, minus the policy.
//! - [`spawn_stuck`]: an actor whose handler blocks until a gate closes, behind ractor's
//!   unbounded mailbox: every `cast` is accepted and queued.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::Semaphore;

use crate::certs::BoxError;

/// What the panicking handlers (colony's and ractor's) panic with; the bench's panic hook keeps
/// these off stderr.
pub(crate) const PANIC: &str = "colony-bench: asked to panic";

/// A restart as its caller saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restart {
    /// From the failed call's return to the first successful call's return.
    pub(crate) took: Duration,
    /// Calls that failed in between (the polling).
    pub(crate) polls: u64,
    /// colony only: when the first poll was refused for want of a running instance, i.e. when
    /// the supervisor had taken the dead incarnation out of its slot.
    pub(crate) emptied: Option<Duration>,
}

/// Longest a restart may take before the sample is given up.
pub(crate) const GIVE_UP: Duration = Duration::from_secs(5);

/// What a restart poller does between two tries, on both sides. A refused call never waits, so
/// a bare loop would hold its worker, and its CPU, from the supervisor: `yield_now` lets the
/// worker run other tasks, and `std::thread::yield_now` (`sched_yield`) lets the other worker's
/// thread run when the kernel has queued it on this CPU, where it would otherwise wait for the
/// scheduler tick (4 ms on the test machine) behind the spinning poller.
pub(crate) async fn between_polls() {
    std::thread::yield_now();
    tokio::task::yield_now().await;
}

/// The child's messages: answer, or panic.
pub(crate) enum ChildMsg {
    Ping(RpcReplyPort<()>),
    Crash(RpcReplyPort<()>),
}

struct Child;

impl Actor for Child {
    type Msg = ChildMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ChildMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<ChildMsg>,
        msg: ChildMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ChildMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            ChildMsg::Crash(reply) => {
                // Unanswered: dropped while unwinding, as colony's reply port is, so the caller
                // hears of the panic only once it has happened.
                let _unanswered = reply;
                panic!("{PANIC}")
            }
        }
        Ok(())
    }
}

/// The child callers should use now (set by the supervisor; `None` only before it starts).
type Current = Arc<Mutex<Option<ActorRef<ChildMsg>>>>;

struct Supervisor;

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<()>,
        current: &Current,
    ) -> Result<(), ActorProcessingErr> {
        let (child, _) = Actor::spawn_linked(None, Child, (), myself.get_cell()).await?;
        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }
}

impl Actor for Supervisor {
    type Msg = ();
    type State = Current;
    type Arguments = Current;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        current: Current,
    ) -> Result<Current, ActorProcessingErr> {
        Self::spawn_child(&myself, &current).await?;
        Ok(current)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        current: &mut Current,
    ) -> Result<(), ActorProcessingErr> {
        // Only a failure restarts; a child stopped on purpose stays stopped.
        if let SupervisionEvent::ActorFailed(..) = event {
            Self::spawn_child(&myself, current).await?;
        }
        Ok(())
    }
}

/// A running raw supervisor and the slot its callers read.
pub(crate) struct RawSupervised {
    supervisor: ActorRef<()>,
    current: Current,
}

impl RawSupervised {
    /// Starts the supervisor and its first child.
    pub(crate) async fn start() -> Result<Self, BoxError> {
        let current = Current::default();
        let (supervisor, _) = Actor::spawn(None, Supervisor, current.clone()).await?;
        Ok(Self {
            supervisor,
            current,
        })
    }

    /// Calls the current child; `Err` when the call fails (the child is dead or dying).
    async fn call(&self, msg: fn(RpcReplyPort<()>) -> ChildMsg) -> Result<(), ()> {
        let child = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let child = child.ok_or(())?;
        ractor::call!(child, msg).map_err(|_| ())
    }

    /// Makes the child panic, then calls until a child answers.
    pub(crate) async fn restart_once(&self) -> Result<Restart, String> {
        if self.call(ChildMsg::Crash).await.is_ok() {
            return Err("the panicking call succeeded".into());
        }
        let failed = Instant::now();
        let mut polls = 0;
        loop {
            // Each try reads the slot afresh: the supervisor may have replaced the child.
            if self.call(ChildMsg::Ping).await.is_ok() {
                return Ok(Restart {
                    took: failed.elapsed(),
                    polls,
                    emptied: None,
                });
            }
            polls += 1;
            if failed.elapsed() > GIVE_UP {
                return Err(format!("no child answered within {GIVE_UP:?}"));
            }
            between_polls().await;
        }
    }

    /// Stops the supervisor and its child.
    pub(crate) fn stop(&self) {
        self.supervisor.stop(None);
    }
}

/// An actor whose handler waits for `gate` to close; its mailbox is ractor's (unbounded).
struct Stuck;

impl Actor for Stuck {
    type Msg = u64;
    type State = Arc<Semaphore>;
    type Arguments = Arc<Semaphore>;

    async fn pre_start(
        &self,
        _: ActorRef<u64>,
        gate: Arc<Semaphore>,
    ) -> Result<Arc<Semaphore>, ActorProcessingErr> {
        Ok(gate)
    }

    async fn handle(
        &self,
        _: ActorRef<u64>,
        _: u64,
        gate: &mut Arc<Semaphore>,
    ) -> Result<(), ActorProcessingErr> {
        // Never acquired: returns (with an error) once the gate is closed.
        let _ = gate.acquire().await;
        Ok(())
    }
}

/// Spawns a [`Stuck`] actor held by `gate`; kill it with `actor.kill()` and await the handle.
pub(crate) async fn spawn_stuck(
    gate: Arc<Semaphore>,
) -> Result<(ActorRef<u64>, tokio::task::JoinHandle<()>), BoxError> {
    Ok(Actor::spawn(None, Stuck, gate).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_supervisor_replaces_a_panicked_child() {
        let raw = RawSupervised::start().await.unwrap();
        for _ in 0..3 {
            let restart = raw.restart_once().await.unwrap();
            assert!(restart.took < GIVE_UP);
        }
        raw.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_actor_queues_every_cast() {
        let gate = Arc::new(Semaphore::new(0));
        let (actor, handle) = spawn_stuck(gate.clone()).await.unwrap();
        for n in 0..1000 {
            actor.cast(n).unwrap();
        }
        gate.close();
        actor.kill();
        handle.await.unwrap();
    }
}
