//! The supervisor's behaviour: restarts, strategies, backoff, budget, hooks, mailboxes, scaling
//! and draining.

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

/// A spec with the default mailbox and no parent.
fn spec<B: Behavior>(
    name: &str,
    instances: usize,
    factory: Factory<B>,
    policy: RestartPolicy,
) -> ServiceSpec<B> {
    ServiceSpec {
        name: name.into(),
        instances,
        factory,
        policy,
        mailbox: DEFAULT_MAILBOX,
        parent: None,
        gave_up: None,
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
        .map(|i| s.instances.mailbox(i).map(|a| a.get_id()))
        .collect()
}

async fn exit_slot(s: &Supervised<Flaky>, slot: usize, panic: bool) {
    let actor = s.instances.mailbox(slot).expect("a live slot");
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
    let s = supervise(spec(
        "starts-once",
        1,
        Arc::new(|| StartsOnce),
        RestartPolicy {
            max_restarts: 3,
            backoff: Duration::from_millis(1),
            ..RestartPolicy::default()
        },
    ))
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
    let spawned = supervise(spec(
        "hangs",
        1,
        Arc::new(|| Hangs),
        RestartPolicy {
            start_timeout: Duration::from_millis(50),
            ..RestartPolicy::default()
        },
    ))
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
    let s = supervise(spec(
        "hooked",
        2,
        Arc::new(move || Hooked(hooks.clone(), 0)),
        RestartPolicy::default(),
    ))
    .await
    .unwrap();
    let first = s.instances.mailbox(0).unwrap();
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
    let stopped = s.instances.mailbox(0).unwrap();
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
    let s = supervise(spec(
        "explosive",
        1,
        Arc::new(|| Explosive(false)),
        RestartPolicy::default(),
    ))
    .await
    .unwrap();
    assert!(s.instances.send(Ask::Panic).is_ok());
    // The task dies in the state's drop, after the handler's panic was caught: its exit is
    // reported all the same, so the slot does not look live with nobody reading it.
    wait_until(|| s.instances.restarts() == 1 && s.instances.live() == 1).await;
    assert_eq!(count(&s).await, Some(7), "the replacement serves");
    let why = s.instances.last_failure().unwrap().reason;
    assert!(
        why.contains("asked to fail") && why.contains("dropping the state failed"),
        "both panics are told: {why}"
    );
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
    let last = s.instances.mailbox(3).unwrap();
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
