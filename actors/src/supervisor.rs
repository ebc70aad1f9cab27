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
    why: String,
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
            if let Some(gave_up) = &self.gave_up {
                gave_up(myself.get_id(), &reason);
            }
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
                if state.draining {
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
                    self.start_or_fail(&myself, state, slot).await;
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
mod tests {
    use super::*;
    use crate::instances::SendError;
    use crate::restart::{ChildPolicy, RestartStrategy};
    use crate::Done;
    use tokio::sync::oneshot;

    /// Replies with how many messages this incarnation has seen; panics when asked to.
    struct Flaky(u32);
    enum Ask {
        Count(oneshot::Sender<u32>),
        Panic,
        Block(oneshot::Receiver<()>),
    }
    impl Behavior for Flaky {
        type Msg = Ask;
        async fn handle(&mut self, msg: Ask, done: Done<'_>) {
            match msg {
                Ask::Count(reply) => {
                    self.0 += 1;
                    // Counted free before answering, as the runtime's instances do.
                    drop(done);
                    let _ = reply.send(self.0);
                }
                Ask::Panic => panic!("asked to fail"),
                Ask::Block(until) => {
                    let _ = until.await;
                }
            }
        }
    }

    async fn start(policy: RestartPolicy) -> Supervised<Flaky> {
        start_n(policy, 1).await
    }

    async fn start_n(policy: RestartPolicy, instances: usize) -> Supervised<Flaky> {
        start_with_mailbox(policy, instances, DEFAULT_MAILBOX).await
    }

    async fn start_with_mailbox(
        policy: RestartPolicy,
        instances: usize,
        mailbox: usize,
    ) -> Supervised<Flaky> {
        supervise(ServiceSpec {
            name: "flaky".into(),
            instances,
            factory: Arc::new(|| Flaky(0)),
            policy,
            mailbox,
            parent: None,
            gave_up: None,
        })
        .await
        .unwrap()
    }

    async fn count<B: Behavior<Msg = Ask>>(s: &Supervised<B>) -> Option<u32> {
        let (tx, rx) = oneshot::channel();
        s.instances.send(Ask::Count(tx)).ok()?;
        rx.await.ok()
    }

    async fn wait_until(mut cond: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("condition not reached in 10 s");
    }

    #[tokio::test]
    async fn failed_instance_is_replaced_with_fresh_state() {
        let s = start(RestartPolicy::default()).await;
        assert_eq!(count(&s).await, Some(1));
        assert_eq!(count(&s).await, Some(2));
        assert!(s.instances.send(Ask::Panic).is_ok());
        wait_until(|| s.instances.restarts() == 1 && s.instances.live() == 1).await;
        assert_eq!(
            count(&s).await,
            Some(1),
            "restarted instance starts from the factory"
        );
        s.supervisor.stop_and_wait(None, None).await.unwrap();
        assert_eq!(s.instances.live(), 0);
    }

    #[tokio::test]
    async fn supervisor_gives_up_past_the_budget() {
        let policy = RestartPolicy {
            max_restarts: 2,
            within: Duration::from_secs(600),
            ..RestartPolicy::default()
        };
        let s = start(policy).await;
        for restarts in 1..=2 {
            assert!(s.instances.send(Ask::Panic).is_ok());
            wait_until(|| s.instances.restarts() == restarts && s.instances.live() == 1).await;
        }
        assert!(s.instances.send(Ask::Panic).is_ok());
        tokio::time::timeout(Duration::from_secs(10), s.supervisor.wait(None))
            .await
            .expect("supervisor should stop")
            .unwrap();
        assert_eq!(s.instances.live(), 0);
        assert_eq!(count(&s).await, None);
    }

    #[tokio::test]
    async fn a_busy_instance_gets_no_messages_while_another_is_idle() {
        let s = start_n(RestartPolicy::default(), 2).await;
        let (release, blocked) = oneshot::channel();
        assert!(s.instances.send(Ask::Block(blocked)).is_ok());
        let mut depths = s.instances.depths();
        depths.sort();
        assert_eq!(depths, vec![Some(0), Some(1)]);
        // Round-robin would send every other message behind the blocked one, where it would
        // wait; least-loaded sends all of them to the idle instance.
        for expected in 1..=50 {
            let counted = tokio::time::timeout(Duration::from_secs(10), count(&s)).await;
            assert_eq!(counted, Ok(Some(expected)), "message {expected}");
        }
        release.send(()).unwrap();
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }

    fn ids(s: &Supervised<Flaky>, count: usize) -> Vec<Option<InstanceId>> {
        (0..count)
            .map(|i| s.instances.actor(i).map(|a| a.get_id()))
            .collect()
    }

    async fn exit_slot(s: &Supervised<Flaky>, slot: usize, panic: bool) {
        let actor = s.instances.actor(slot).expect("a live slot");
        if panic {
            actor.send_message(Ask::Panic).unwrap();
        } else {
            actor.stop(None);
        }
    }

    fn with(strategy: RestartStrategy, child: ChildPolicy) -> RestartPolicy {
        RestartPolicy {
            strategy,
            child,
            ..RestartPolicy::default()
        }
    }

    /// Backoff grows between restarts of a crash-looping instance, read on tokio's paused
    /// clock: the test measures virtual time, so it neither waits nor depends on the machine.
    #[tokio::test(start_paused = true)]
    async fn restarts_back_off_longer_each_time() {
        let backoff = Duration::from_millis(100);
        let policy = RestartPolicy {
            max_restarts: 100,
            backoff,
            max_backoff: Duration::from_secs(60),
            ..RestartPolicy::default()
        };
        let s = start(policy).await;
        let mut gaps = Vec::new();
        for n in 1..=6u32 {
            assert!(s.instances.send(Ask::Panic).is_ok());
            let failed_at = tokio::time::Instant::now();
            while !(s.instances.restarts() == u64::from(n) && s.instances.live() == 1) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            gaps.push(failed_at.elapsed());
        }
        for (k, gap) in gaps.iter().enumerate() {
            // Between half the backoff ceiling and all of it (plus the 1 ms polling step).
            let ceiling = backoff * (1 << k);
            assert!(
                *gap >= ceiling / 2 && *gap <= ceiling + Duration::from_millis(2),
                "restart {k}: waited {gap:?}, ceiling {ceiling:?} (all: {gaps:?})"
            );
        }
        assert!(gaps[5] >= gaps[0] * 8, "grew: {gaps:?}");
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_failing_start_hook_counts_as_a_failure_and_exhausts_the_budget() {
        /// Starts once, then refuses every restart.
        struct StartsOnce;
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        impl Behavior for StartsOnce {
            type Msg = Ask;
            async fn handle(&mut self, msg: Ask, _done: Done<'_>) {
                if let Ask::Panic = msg {
                    panic!("asked to fail");
                }
            }
            async fn started(&mut self) -> Result<(), String> {
                match STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 => Ok(()),
                    n => Err(format!("start #{n} refused")),
                }
            }
        }
        let s = supervise(ServiceSpec {
            name: "starts-once".into(),
            instances: 1,
            factory: Arc::new(|| StartsOnce),
            policy: RestartPolicy {
                max_restarts: 3,
                backoff: Duration::from_millis(1),
                ..RestartPolicy::default()
            },
            mailbox: DEFAULT_MAILBOX,
            parent: None,
            gave_up: None,
        })
        .await
        .unwrap();
        assert!(s.instances.send(Ask::Panic).is_ok());
        tokio::time::timeout(Duration::from_secs(10), s.supervisor.wait(None))
            .await
            .expect("the supervisor gives up once restarts keep failing")
            .unwrap();
        // The first start, then one restart per budget unit, each refused.
        assert_eq!(STARTS.load(std::sync::atomic::Ordering::SeqCst), 4);
        let failure = s.instances.last_failure().expect("a failure is recorded");
        assert!(failure.reason.contains("start #3 refused"), "{failure:?}");
    }

    #[tokio::test]
    async fn a_start_hook_that_hangs_fails_the_start_after_its_timeout() {
        struct Hangs;
        impl Behavior for Hangs {
            type Msg = Ask;
            async fn handle(&mut self, _: Ask, _done: Done<'_>) {}
            async fn started(&mut self) -> Result<(), String> {
                std::future::pending().await
            }
        }
        let spawned = supervise(ServiceSpec {
            name: "hangs".into(),
            instances: 1,
            factory: Arc::new(|| Hangs),
            policy: RestartPolicy {
                start_timeout: Duration::from_millis(50),
                ..RestartPolicy::default()
            },
            mailbox: DEFAULT_MAILBOX,
            parent: None,
            gave_up: None,
        })
        .await;
        let err = spawned.err().expect("the start fails").to_string();
        assert!(err.contains("did not finish within 50ms"), "{err}");
    }

    #[tokio::test]
    async fn draining_answers_queued_calls_runs_stopping_hooks_then_stops() {
        let stopped = Arc::new(std::sync::atomic::AtomicU32::new(0));
        struct Hooked(Arc<std::sync::atomic::AtomicU32>, u32);
        impl Behavior for Hooked {
            type Msg = Ask;
            async fn handle(&mut self, msg: Ask, done: Done<'_>) {
                match msg {
                    Ask::Count(reply) => {
                        self.1 += 1;
                        drop(done);
                        let _ = reply.send(self.1);
                    }
                    Ask::Block(until) => {
                        let _ = until.await;
                    }
                    Ask::Panic => panic!("asked to fail"),
                }
            }
            async fn stopping(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let hooks = stopped.clone();
        let s = supervise(ServiceSpec {
            name: "hooked".into(),
            instances: 2,
            factory: Arc::new(move || Hooked(hooks.clone(), 0)),
            policy: RestartPolicy::default(),
            mailbox: DEFAULT_MAILBOX,
            parent: None,
            gave_up: None,
        })
        .await
        .unwrap();
        let first = s.instances.actor(0).unwrap();
        let (release, blocked) = oneshot::channel();
        first.send_message(Ask::Block(blocked)).unwrap();
        let (tx, queued) = oneshot::channel();
        first.send_message(Ask::Count(tx)).unwrap();
        s.supervisor.cast(SupervisorMsg::Drain).unwrap();
        wait_until(|| s.instances.live() == 0).await;
        assert!(count(&s).await.is_none(), "no new call once draining");
        release.send(()).unwrap();
        assert_eq!(queued.await.ok(), Some(1), "the queued call is answered");
        tokio::time::timeout(Duration::from_secs(10), s.supervisor.wait(None))
            .await
            .expect("the supervisor stops once drained")
            .unwrap();
        assert_eq!(stopped.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(
            s.instances.restarts(),
            0,
            "a drained instance is not restarted"
        );
    }

    #[tokio::test]
    async fn one_for_all_restarts_every_instance() {
        let s = start_n(with(RestartStrategy::OneForAll, ChildPolicy::Permanent), 3).await;
        let before = ids(&s, 3);
        exit_slot(&s, 1, true).await;
        wait_until(|| {
            let now = ids(&s, 3);
            s.instances.live() == 3 && now.iter().zip(&before).all(|(n, b)| n != b)
        })
        .await;
        assert_eq!(s.instances.restarts(), 1, "one restart of the whole set");
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn rest_for_one_restarts_the_failed_one_and_those_after_it() {
        let s = start_n(with(RestartStrategy::RestForOne, ChildPolicy::Permanent), 3).await;
        let before = ids(&s, 3);
        exit_slot(&s, 1, true).await;
        wait_until(|| {
            let now = ids(&s, 3);
            s.instances.live() == 3 && now[1] != before[1] && now[2] != before[2]
        })
        .await;
        assert_eq!(
            ids(&s, 3)[0],
            before[0],
            "the one started before it is kept"
        );
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn transient_instances_restart_after_a_failure_only() {
        let s = start_n(with(RestartStrategy::OneForOne, ChildPolicy::Transient), 2).await;
        exit_slot(&s, 0, true).await;
        wait_until(|| s.instances.restarts() == 1 && s.instances.live() == 2).await;
        exit_slot(&s, 1, false).await;
        wait_until(|| s.instances.live() == 1).await;
        assert_eq!(s.instances.restarts(), 1, "a normal stop is not restarted");
        assert_eq!(count(&s).await, Some(1), "the other one serves");
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn temporary_instances_never_restart_and_the_last_exit_ends_the_service() {
        let s = start_n(with(RestartStrategy::OneForOne, ChildPolicy::Temporary), 2).await;
        exit_slot(&s, 0, true).await;
        wait_until(|| s.instances.live() == 1).await;
        assert_eq!(s.instances.restarts(), 0);
        exit_slot(&s, 1, false).await;
        tokio::time::timeout(Duration::from_secs(10), s.supervisor.wait(None))
            .await
            .expect("the supervisor ends with its last instance")
            .unwrap();
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_at_once_and_hands_the_message_back() {
        let s = start_with_mailbox(RestartPolicy::default(), 1, 2).await;
        let (release, blocked) = oneshot::channel();
        assert!(s.instances.send(Ask::Block(blocked)).is_ok());
        let (tx, queued) = oneshot::channel();
        assert!(s.instances.send(Ask::Count(tx)).is_ok(), "the second fits");
        let (tx, _) = oneshot::channel();
        match s.instances.send(Ask::Count(tx)) {
            Err(SendError::Full(Ask::Count(_))) => {}
            other => panic!(
                "expected Full with the message back, got {:?}",
                other.is_ok()
            ),
        }
        release.send(()).unwrap();
        assert_eq!(queued.await.ok(), Some(1), "the queued one is served");
        assert_eq!(count(&s).await, Some(2), "and there is room again");
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn a_stopped_instance_is_reported_missing_not_full() {
        let s = start_n(with(RestartStrategy::OneForOne, ChildPolicy::Temporary), 1).await;
        let stopped = s.instances.actor(0).unwrap();
        stopped.stop(None);
        // Whether or not the supervisor has emptied the slot yet, nothing is full.
        let (tx, _) = oneshot::channel();
        match s.instances.send(Ask::Count(tx)) {
            Err(SendError::NoInstance(_)) => {}
            Err(SendError::Full(_)) => panic!("a stopped instance was reported full"),
            Ok(()) => panic!("a stopped instance took a message"),
        }
    }

    #[tokio::test]
    async fn an_instance_that_panics_in_a_drop_is_still_replaced() {
        /// Panics when dropped once it has been asked to fail.
        struct Explosive(bool);
        impl Drop for Explosive {
            fn drop(&mut self) {
                if self.0 {
                    panic!("dropping the state failed");
                }
            }
        }
        impl Behavior for Explosive {
            type Msg = Ask;
            async fn handle(&mut self, msg: Ask, done: Done<'_>) {
                match msg {
                    Ask::Count(reply) => {
                        drop(done);
                        let _ = reply.send(7);
                    }
                    Ask::Panic => {
                        self.0 = true;
                        panic!("asked to fail");
                    }
                    Ask::Block(_) => {}
                }
            }
        }
        let s = supervise(ServiceSpec {
            name: "explosive".into(),
            instances: 1,
            factory: Arc::new(|| Explosive(false)),
            policy: RestartPolicy::default(),
            mailbox: DEFAULT_MAILBOX,
            parent: None,
            gave_up: None,
        })
        .await
        .unwrap();
        assert!(s.instances.send(Ask::Panic).is_ok());
        // The task dies in the state's drop, after the handler's panic was caught: its exit is
        // reported all the same, so the slot does not look live with nobody reading it.
        wait_until(|| s.instances.restarts() == 1 && s.instances.live() == 1).await;
        assert_eq!(count(&s).await, Some(7), "the replacement serves");
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }

    #[tokio::test]
    async fn scaling_is_refused_once_draining() {
        let s = start_n(RestartPolicy::default(), 1).await;
        let (release, blocked) = oneshot::channel();
        assert!(s.instances.send(Ask::Block(blocked)).is_ok());
        s.supervisor.cast(SupervisorMsg::Drain).unwrap();
        let scaled = s
            .supervisor
            .call(|port| SupervisorMsg::Scale(4, port), None)
            .await
            .unwrap();
        assert!(matches!(scaled, ractor::rpc::CallResult::Success(false)));
        assert_eq!(
            s.instances.slots(),
            0,
            "nothing started for a draining service"
        );
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), s.supervisor.wait(None))
            .await
            .expect("drained")
            .unwrap();
    }

    #[tokio::test]
    async fn scaling_up_and_down_keeps_serving_and_drains_the_removed() {
        let s = start_n(RestartPolicy::default(), 2).await;
        let scale = |n| {
            let supervisor = s.supervisor.clone();
            async move {
                let done = supervisor
                    .call(|port| SupervisorMsg::Scale(n, port), None)
                    .await
                    .unwrap();
                assert!(matches!(done, ractor::rpc::CallResult::Success(true)));
            }
        };
        scale(4).await;
        assert_eq!((s.instances.slots(), s.instances.live()), (4, 4));
        // Queue work on the last slot, then scale it away: the queued call is still answered.
        let last = s.instances.actor(3).unwrap();
        let (release, blocked) = oneshot::channel();
        last.send_message(Ask::Block(blocked)).unwrap();
        let (tx, queued) = oneshot::channel();
        last.send_message(Ask::Count(tx)).unwrap();
        scale(2).await;
        assert_eq!((s.instances.slots(), s.instances.live()), (2, 2));
        release.send(()).unwrap();
        assert_eq!(queued.await.ok(), Some(1), "drained, not dropped");
        assert_eq!(
            s.instances.restarts(),
            0,
            "a scaled-down instance is not restarted"
        );
        assert!(count(&s).await.is_some());
        s.supervisor.stop_and_wait(None, None).await.unwrap();
    }
}
