//! The supervisor of a service's instances: starts them, restarts the ones that fail.
//!
//! ractor's default reaction to a failed child is to stop the parent; here a failed instance is
//! replaced by a fresh one built from the service's factory, as long as the restart budget of the
//! [`RestartPolicy`] holds. Past the budget the supervisor stops, taking the service down, which
//! is what OTP does when intensity is exceeded; the supervisor above it (its `parent`) hears why.
//!
//! The supervisor is a ractor actor; its instances are lighter tasks with mailboxes of their own
//! (see `instance.rs`), which report their exit to it as [`SupervisorMsg::Exited`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::behavior::Behavior;
use crate::instance::{self, Child, Factory, InstanceId};
use crate::instances::Instances;
use crate::restart::{RestartBudget, RestartPolicy};

/// How long a stopping supervisor waits for its instances to finish their current message.
const CHILD_STOP_GRACE: Duration = Duration::from_secs(5);

/// Everything needed to start a supervised service.
pub struct ServiceSpec<B: Behavior> {
    /// Name used in logs.
    pub name: String,
    /// How many instances to run.
    pub instances: usize,
    /// Makes the state of each instance, on start and on every restart.
    pub factory: Factory<B>,
    /// What to do when an instance fails.
    pub policy: RestartPolicy,
    /// Messages each instance may have waiting; past it, sends are refused (see
    /// [`Instances::send`]). [`DEFAULT_MAILBOX`] is a sane default.
    pub mailbox: usize,
    /// The supervisor above this one, told when this one stops (OTP escalation); `None` for a
    /// top-level supervisor.
    pub parent: Option<ractor::ActorCell>,
    /// Called once, the moment the restart budget is exhausted, before the supervisor stops
    /// (which waits for the calls its instances are handling): for whoever must act at once.
    pub gave_up: Option<GaveUp>,
}

/// See [`ServiceSpec::gave_up`]; gets the supervisor's id and its stop reason (which starts
/// with [`EXHAUSTED`]).
pub type GaveUp = Arc<dyn Fn(ractor::ActorId, &str) + Send + Sync>;

/// Default mailbox capacity per instance: deep enough to absorb bursts, small enough that a
/// stuck instance holds at most this many callers.
pub const DEFAULT_MAILBOX: usize = 1024;

/// A running supervised service: its supervisor and the table of its instances.
pub struct Supervised<B: Behavior> {
    /// The supervisor actor; stopping it stops every instance.
    pub supervisor: ActorRef<SupervisorMsg>,
    /// The instances' mailboxes, kept current across restarts.
    pub instances: Arc<Instances<B::Msg>>,
}

/// Starts the supervisor and all instances; returns once every instance has started.
pub async fn supervise<B: Behavior>(
    spec: ServiceSpec<B>,
) -> Result<Supervised<B>, ractor::SpawnErr> {
    let instances = Arc::new(Instances::new(spec.instances, spec.mailbox));
    let supervisor = Supervisor {
        name: spec.name,
        count: spec.instances,
        factory: spec.factory,
        policy: spec.policy,
        instances: instances.clone(),
        gave_up: spec.gave_up,
    };
    let (supervisor, _join) = match spec.parent {
        Some(parent) => Actor::spawn_linked(None, supervisor, (), parent).await?,
        None => Actor::spawn(None, supervisor, ()).await?,
    };
    Ok(Supervised {
        supervisor,
        instances,
    })
}

struct Supervisor<B: Behavior> {
    name: String,
    /// Instances at start; [`SupervisorMsg::Scale`] changes the count later.
    count: usize,
    factory: Factory<B>,
    policy: RestartPolicy,
    instances: Arc<Instances<B::Msg>>,
    gave_up: Option<GaveUp>,
}

/// A service supervisor's mailbox: its own timers and instances' exits, and what the runtime
/// asks of it (scale, drain).
pub enum SupervisorMsg {
    /// A backoff ended: start these slots (those still empty), in order.
    Restart(Vec<usize>),
    /// Run this many instances: start new ones, or drain and stop the last ones (they finish
    /// the calls already in their mailboxes; no new call reaches them). Answers false, doing
    /// nothing, once the service is draining.
    Scale(usize, RpcReplyPort<bool>),
    /// Stop gracefully: no new call reaches an instance, each finishes the calls already in its
    /// mailbox and runs its `stopping` hook, then the supervisor stops (wait for it with
    /// `ActorRef::wait`). Restarts still pending are dropped.
    Drain,
    /// An instance exited (sent by the instance itself).
    Exited(Exited),
}

/// How an instance ended: what its supervisor hears, as ractor's supervision events said.
#[derive(Debug)]
pub struct Exited {
    id: InstanceId,
    /// A panic, as opposed to a stop or the end of a drain.
    pub(crate) failed: bool,
    pub(crate) why: String,
}

impl Exited {
    pub(crate) fn stopped(id: InstanceId, why: String) -> Self {
        Self {
            id,
            failed: false,
            why,
        }
    }

    pub(crate) fn failed(id: InstanceId, why: String) -> Self {
        Self {
            id,
            failed: true,
            why,
        }
    }
}

/// The supervisor's bookkeeping.
pub(crate) struct SupervisorState<M> {
    budget: RestartBudget,
    /// Instances stopped or drained on purpose (siblings of a one-for-all or rest-for-one
    /// restart, scaled-down slots, a draining service): their exit is not a failure. Kept to be
    /// stopped with the service, as a ractor supervisor stops all its children.
    stopping: HashMap<InstanceId, Child<M>>,
    /// Restarts scheduled and not yet done.
    pending: usize,
    /// Stopping gracefully: restart nothing, stop once the last instance has drained.
    draining: bool,
    /// The restart budget ran out (and the parent was told, once): stopping.
    gave_up: bool,
}

impl<M> Drop for SupervisorState<M> {
    fn drop(&mut self) {
        self.stopping.values().for_each(Child::kill);
    }
}

/// However the supervisor ends, its instances end with it (ractor kills a dead actor's
/// children); a normal stop has already stopped them gracefully in `post_stop`.
impl<B: Behavior> Drop for Supervisor<B> {
    fn drop(&mut self) {
        self.instances.clear().iter().for_each(Child::kill);
    }
}

impl<B: Behavior> Supervisor<B> {
    /// Starts the instance of `slot`; it takes messages once its `started` hook has run.
    async fn start_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        slot: usize,
    ) -> Result<(), String> {
        let child =
            instance::start(&self.factory, myself.clone(), self.policy.start_timeout).await?;
        if let Some(old) = self.instances.set(slot, Some(child)) {
            old.kill();
        }
        Ok(())
    }

    /// Stops `child` on purpose (after the message at hand; with `drain`, after its queue) and
    /// remembers it, so its exit is not taken for a failure.
    fn retire(
        &self,
        state: &mut SupervisorState<B::Msg>,
        child: Child<B::Msg>,
        drain: bool,
        why: &str,
    ) {
        if !drain || child.mailbox.drain().is_err() {
            child.mailbox.stop(Some(why.to_string()));
        }
        state.stopping.insert(child.mailbox.get_id(), child);
    }

    /// A child exited: the slot it held fails or ends (see [`Self::slot_down`]).
    fn exited(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState<B::Msg>,
        child: InstanceId,
        failed: bool,
        why: &str,
    ) {
        if state.stopping.remove(&child).is_some() {
            if state.draining && state.stopping.is_empty() {
                myself.stop(Some("drained".into()));
            }
            return;
        }
        let Some(slot) = self.instances.slot_of(child) else {
            return;
        };
        // Its task has ended (it reported its exit last).
        drop(self.instances.set(slot, None));
        self.slot_down(myself, state, slot, failed, why);
    }

    /// Starts the instance of `slot`; a start that fails (its `started` hook) counts as a
    /// failure of the slot, so it backs off and spends the budget like a panic.
    async fn start_or_fail(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState<B::Msg>,
        slot: usize,
    ) -> bool {
        match self.start_child(myself, slot).await {
            Ok(()) => true,
            Err(e) => {
                let why = format!("start failed: {e}");
                self.slot_down(myself, state, slot, true, &why);
                false
            }
        }
    }

    /// The instance of `slot` is gone: decide which slots restart, stop the siblings that go
    /// with it, and schedule the restart after a backoff; past the budget, stop, so the failure
    /// goes up to the parent supervisor (OTP's escalation).
    fn slot_down(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState<B::Msg>,
        slot: usize,
        failed: bool,
        why: &str,
    ) {
        if failed {
            self.instances.record_failure(why);
        }
        let slots = self
            .policy
            .slots_to_restart(slot, self.instances.slots(), failed);
        if slots.is_empty() {
            tracing::info!(service = %self.name, slot, %why, child_policy = ?self.policy.child, "instance exited; not restarted");
            if self.instances.live() == 0 && state.pending == 0 {
                // Nothing left to serve and nothing coming back: the service ends, and its
                // node withdraws it.
                myself.stop(Some(format!("{ENDED}: {why}")));
            }
            return;
        }
        let Some(wait) = state.budget.try_spend(&self.policy, Instant::now()) else {
            tracing::error!(service = %self.name, %why, "restart budget exhausted; stopping service");
            let reason = format!("{EXHAUSTED}: {why}");
            // Told now: stopping waits for the other instances' calls at hand, and the service
            // must leave routing before that.
            if let (Some(gave_up), false) = (&self.gave_up, state.gave_up) {
                gave_up(myself.get_id(), &reason);
            }
            state.gave_up = true;
            myself.stop(Some(reason));
            return;
        };
        for &sibling in slots.iter().filter(|&&s| s != slot) {
            if let Some(child) = self.instances.take(sibling) {
                self.retire(state, child, false, &format!("restarting with slot {slot}"));
            }
        }
        tracing::warn!(service = %self.name, slot, ?slots, ?wait, %why, "instance exited; restarting");
        self.instances.count_restart();
        state.pending += 1;
        if wait.is_zero() {
            // A timer would round even a zero wait up to the next millisecond tick.
            let _ = myself.send_message(SupervisorMsg::Restart(slots));
        } else {
            myself.send_after(wait, move || SupervisorMsg::Restart(slots));
        }
    }
}

/// Stops every ractor child of `supervisor` and waits (at most `grace` in all) for each to
/// finish the message at hand and exit. ractor kills an actor's children when it exits, so a
/// supervisor calls this before it does; unlike ractor's `stop_children_and_wait`, it also
/// waits for a child that was already stopping or draining.
pub async fn stop_children(supervisor: &ractor::ActorCell, reason: &str, grace: Duration) {
    let children = supervisor.get_children();
    for child in &children {
        child.stop(Some(reason.to_string()));
    }
    let deadline = tokio::time::Instant::now() + grace;
    for child in children {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let _ = child.wait(Some(left)).await;
    }
}

/// How a supervisor's stop reason starts when its restart budget ran out.
pub const EXHAUSTED: &str = "restart budget exhausted";
/// How a supervisor's stop reason starts when every instance exited and none restarts.
pub const ENDED: &str = "every instance exited and none restarts";

impl<B: Behavior> Actor for Supervisor<B> {
    type Msg = SupervisorMsg;
    type State = SupervisorState<B::Msg>;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            budget: RestartBudget::default(),
            stopping: HashMap::new(),
            pending: 0,
            draining: false,
            gave_up: false,
        };
        for slot in 0..self.count {
            if let Err(e) = self.start_child(&myself, slot).await {
                // The service does not start half-made: the instances already up go away.
                for child in self.instances.resize(0) {
                    self.retire(&mut state, child, false, "service failed to start");
                }
                stop_all(&mut state, Vec::new()).await;
                return Err(e.into());
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        stop_all(state, self.instances.clear()).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState<B::Msg>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(slots) => {
                state.pending = state.pending.saturating_sub(1);
                if state.draining || state.gave_up {
                    return Ok(());
                }
                for slot in slots {
                    // A slot may be gone since (scaled down).
                    if slot < self.instances.slots()
                        && !self.instances.is_live(slot)
                        && !self.start_or_fail(&myself, state, slot).await
                    {
                        // The failed start scheduled the group's restart: the rest of this
                        // batch waits for it, so a one-for-all group never comes up split.
                        break;
                    }
                }
            }
            SupervisorMsg::Scale(count, reply) => {
                if state.draining {
                    let _ = reply.send(false);
                    return Ok(());
                }
                let from = self.instances.slots();
                for child in self.instances.resize(count.max(1)) {
                    // Finish what is queued, then stop: scaling down fails no call.
                    self.retire(state, child, true, "scaled down");
                }
                for slot in from..count {
                    if state.gave_up || !self.start_or_fail(&myself, state, slot).await {
                        // The failed slot restarts after its backoff with the others (or the
                        // budget is gone): starting more now would only fail alongside.
                        break;
                    }
                }
                tracing::info!(service = %self.name, from, to = count.max(1), "scaled");
                let _ = reply.send(true);
            }
            SupervisorMsg::Drain => {
                state.draining = true;
                for child in self.instances.resize(0) {
                    self.retire(state, child, true, "service stopping");
                }
                if state.stopping.is_empty() {
                    myself.stop(Some("drained".into()));
                }
            }
            SupervisorMsg::Exited(exit) => {
                self.exited(&myself, state, exit.id, exit.failed, &exit.why);
            }
        }
        Ok(())
    }
}

/// Stops `running` and the instances already stopping, each after the message at hand (or its
/// queue, if draining), and waits for them all within the grace; past it, kills what is left.
async fn stop_all<M>(state: &mut SupervisorState<M>, mut running: Vec<Child<M>>) {
    for child in &running {
        child.mailbox.stop(Some("service stopping".into()));
    }
    running.extend(state.stopping.drain().map(|(_, child)| child));
    let deadline = tokio::time::Instant::now() + CHILD_STOP_GRACE;
    for child in &mut running {
        if tokio::time::timeout_at(deadline, &mut child.task)
            .await
            .is_err()
        {
            child.kill();
        }
    }
}

#[cfg(test)]
mod tests;
