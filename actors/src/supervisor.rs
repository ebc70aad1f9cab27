//! The supervisor of a service's instances: starts them, restarts the ones that fail.
//!
//! ractor's default reaction to a failed child is to stop the parent; here a failed instance is
//! replaced by a fresh one built from the service's factory, as long as the restart budget of the
//! [`RestartPolicy`] holds. Past the budget the supervisor stops, taking the service down, which
//! is what OTP does when intensity is exceeded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::behavior::Behavior;
use crate::instance::{Factory, InstanceActor};
use crate::instances::{Depth, Instances};
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
}

/// A running supervised service: its supervisor and the table of its instances.
pub struct Supervised<B: Behavior> {
    /// The supervisor actor; stopping it stops every instance.
    pub supervisor: ActorRef<()>,
    /// The instances' mailboxes, kept current across restarts.
    pub instances: Arc<Instances<B::Msg>>,
}

/// Starts the supervisor and all instances; returns once every instance has started.
pub async fn supervise<B: Behavior>(
    spec: ServiceSpec<B>,
) -> Result<Supervised<B>, ractor::SpawnErr> {
    let instances = Arc::new(Instances::new(spec.instances));
    let (supervisor, _join) = Actor::spawn(
        None,
        Supervisor {
            name: spec.name,
            factory: spec.factory,
            policy: spec.policy,
            instances: instances.clone(),
        },
        spec.instances,
    )
    .await?;
    Ok(Supervised {
        supervisor,
        instances,
    })
}

struct Supervisor<B: Behavior> {
    name: String,
    factory: Factory<B>,
    policy: RestartPolicy,
    instances: Arc<Instances<B::Msg>>,
}

impl<B: Behavior> Supervisor<B> {
    async fn start_child(
        &self,
        myself: &ActorRef<()>,
        slot: usize,
    ) -> Result<(), ActorProcessingErr> {
        let depth = Depth::default();
        let child = InstanceActor {
            factory: self.factory.clone(),
            depth: depth.clone(),
        };
        let (actor, _join) = Actor::spawn_linked(None, child, (), myself.get_cell()).await?;
        self.instances.set(slot, Some((actor, depth)));
        Ok(())
    }

    async fn restart(
        &self,
        myself: &ActorRef<()>,
        budget: &mut RestartBudget,
        child: ractor::ActorId,
        why: &str,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = self.instances.slot_of(child) else {
            return Ok(());
        };
        self.instances.set(slot, None);
        if !budget.try_spend(&self.policy, Instant::now()) {
            tracing::error!(service = %self.name, %why, "restart budget exhausted; stopping service");
            myself.stop(Some(format!("restart budget exhausted after: {why}")));
            return Ok(());
        }
        tracing::warn!(service = %self.name, slot, %why, "instance failed; restarting");
        self.instances.count_restart();
        self.start_child(myself, slot).await
    }
}

impl<B: Behavior> Actor for Supervisor<B> {
    type Msg = ();
    type State = RestartBudget;
    type Arguments = usize;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        count: usize,
    ) -> Result<RestartBudget, ActorProcessingErr> {
        for slot in 0..count {
            self.start_child(&myself, slot).await?;
        }
        Ok(RestartBudget::default())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<()>,
        _budget: &mut RestartBudget,
    ) -> Result<(), ActorProcessingErr> {
        self.instances.clear();
        myself
            .stop_children_and_wait(Some("service stopping".into()), Some(CHILD_STOP_GRACE))
            .await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        budget: &mut RestartBudget,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                self.restart(&myself, budget, cell.get_id(), &err.to_string())
                    .await
            }
            // Instances are permanent: one that stops on its own is restarted too.
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let why = reason.unwrap_or_else(|| "stopped".into());
                self.restart(&myself, budget, cell.get_id(), &why).await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        supervise(ServiceSpec {
            name: "flaky".into(),
            instances,
            factory: Arc::new(|| Flaky(0)),
            policy,
        })
        .await
        .unwrap()
    }

    async fn count(s: &Supervised<Flaky>) -> Option<u32> {
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
}
