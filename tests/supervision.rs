//! A handler that panics: its caller gets `Internal`, the supervisor replaces the instance (one
//! restart, fresh state), and the next call is served — for local and remote callers alike.

use std::time::Duration;

use colony::{Code, Node, NodeStatus, Origin, Recovery, RestartPolicy, ServiceStatus};
use colony_tests::*;

/// Waits until the service has restarted `restarts` times in all and runs all its `instances`
/// again.
async fn wait_restarted(fixture: &FixtureService, restarts: u64, instances: usize) {
    let service = fixture.service.clone();
    wait_until(
        move || service.restarts() == restarts && service.live_instances() == instances,
        &format!("restart #{restarts} of the panicked instance"),
    )
    .await;
}

/// Runs the panic scenario against a fresh service on `server`, calling from `caller`, over
/// QUIC when `remote`.
async fn panic_and_recover(server: &Node, caller: &Node, remote: bool) {
    let fixture = start_fixture(server, "panicky", 1).await;
    let at = server.addr();
    let client = caller.client();
    let count = || async {
        let call = client.request("panicky", Count {});
        if remote {
            call.at(at).await
        } else {
            call.await
        }
    };
    assert_eq!(count().await.unwrap(), 1);
    assert_eq!(count().await.unwrap(), 2);
    assert_eq!(fixture.service.restarts(), 0);

    let call = client.request("panicky", Panic {});
    let err = expect_err(
        within("panicking call", if remote { call.at(at) } else { call }).await,
        "panicking call",
    );
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert_eq!(err.origin(), Origin::Server, "{err}");

    wait_restarted(&fixture, 1, 1).await;
    // Served by the fresh instance: its state starts from the factory again.
    assert_eq!(
        count().await.unwrap(),
        1,
        "the restarted instance starts clean"
    );
    assert_eq!(fixture.service.restarts(), 1, "one panic, one restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_the_local_call_and_the_instance_restarts() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    panic_and_recover(&a, &a, false).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_fails_the_remote_call_and_the_instance_restarts() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = start_node(&ca, "b").await;
    panic_and_recover(&a, &b, true).await;
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_and_remote_callers_see_the_same_panic_error() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = start_node(&ca, "b").await;
    let fixture = start_fixture(&a, "panicky", 1).await;

    let local = expect_err(a.client().call("panicky", Panic {}).await, "local panic");
    wait_restarted(&fixture, 1, 1).await;
    let bin = expect_err(
        b.client().call_at(a.addr(), "panicky", Panic {}).await,
        "remote panic",
    );
    wait_restarted(&fixture, 2, 1).await;
    let json = expect_err(
        b.client()
            .request("panicky", Panic {})
            .at(a.addr())
            .json()
            .await,
        "remote JSON panic",
    );
    wait_restarted(&fixture, 3, 1).await;
    assert_eq!(local.code(), Code::Internal);
    assert_eq!(local, bin, "local and remote callers get the same error");
    assert_eq!(local, json);

    // Other calls go on being served, from both sides.
    let reply = b
        .client()
        .call_at(
            a.addr(),
            "panicky",
            Echo {
                text: "after".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "after");
    assert_eq!(a.client().call("panicky", Count {}).await.unwrap(), 1);

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_instance_leaves_the_others_serving() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = start_node(&ca, "b").await;
    let fixture = start_fixture(&a, "panicky", 3).await;

    let err = expect_err(
        b.client().call_at(a.addr(), "panicky", Panic {}).await,
        "remote panic",
    );
    assert_eq!(err.code(), Code::Internal);
    wait_restarted(&fixture, 1, 3).await;
    for i in 0..6 {
        let reply = b
            .client()
            .call_at(
                a.addr(),
                "panicky",
                Echo {
                    text: format!("{i}"),
                },
            )
            .await
            .unwrap();
        assert_eq!(reply.text, format!("{i}"));
    }
    assert_eq!(fixture.service.restarts(), 1);

    b.shutdown().await;
    a.shutdown().await;
}

/// When an instance panics, the calls queued behind it never ran: their callers get
/// `Unavailable` from the server (safe to send elsewhere), not `Internal` like the call that was
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_behind_a_panic_are_unavailable_not_internal() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let fixture = start_fixture(&a, "panicky", 1).await;
    let client = a.client();
    let here = a.addr();
    // One instance, busy with a held call...
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            let hold = Hold {
                tag: "first".into(),
            };
            client.call_at(here, "panicky", hold).await
        }
    });
    wait_until(|| fixture.stats.started_count() == 1, "the held call runs").await;
    // ...then a panic and an echo queued behind it, in that order: in-process calls enter the
    // mailbox when first polled, and `join!` polls them in order.
    let panic = client.call_at(here, "panicky", Panic {});
    let echo = client.call_at(
        here,
        "panicky",
        Echo {
            text: "never ran".into(),
        },
    );
    let opened = async {
        tokio::task::yield_now().await;
        fixture.stats.open_gate();
    };
    let (panicked, queued, ()) = within("the queued calls", async {
        tokio::join!(panic, echo, opened)
    })
    .await;
    within("the held call", held)
        .await
        .unwrap()
        .expect("held call");
    let panicked = expect_err(panicked, "panic");
    assert_eq!(
        (panicked.code(), panicked.origin()),
        (Code::Internal, Origin::Server),
        "{panicked}"
    );
    let queued = expect_err(queued, "the echo queued behind the panic");
    assert_eq!(
        (queued.code(), queued.origin()),
        (Code::Unavailable, Origin::Server),
        "a call that never ran: {queued}"
    );
    wait_restarted(&fixture, 1, 1).await;
    a.shutdown().await;
}

/// Bounded mailboxes: when every instance of a service has its mailbox full, a call is refused
/// at once with `Unavailable` from the server (a caller by name would try elsewhere), and the
/// calls already queued are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_a_call_at_once() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let fixture = start_fixture_with(&a, "tiny", |b| b.instances(1).mailbox(2)).await;
    let client = a.client();
    let here = a.addr();
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call_at(here, "tiny", Hold { tag: "held".into() })
                .await
        }
    });
    wait_until(|| fixture.stats.started_count() == 1, "the held call runs").await;
    // In-process calls enter the mailbox when first polled, and `join!` polls in order: the
    // first fills the mailbox (2 with the held call), the second finds it full.
    let queued = client.call_at(here, "tiny", Count {});
    let refused_then_open = async {
        let refused = client.call_at(here, "tiny", Count {}).await;
        fixture.stats.open_gate();
        refused
    };
    let (queued, refused) = within("the calls", async {
        tokio::join!(queued, refused_then_open)
    })
    .await;
    let refused = expect_err(refused, "a call to a full mailbox");
    assert_eq!(
        (refused.code(), refused.origin()),
        (Code::Unavailable, Origin::Server),
        "{refused}"
    );
    assert!(refused.detail().contains("full mailbox"), "{refused}");
    assert_eq!(queued.expect("the queued call is served"), 1);
    within("the held call", held)
        .await
        .unwrap()
        .expect("held call");
    a.shutdown().await;
}

/// `ServiceRef::scale` changes the number of instances while calls keep coming: none fails,
/// and the advertised actor count follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_while_serving_fails_no_call() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = start_node(&ca, "b").await;
    let fixture = start_fixture(&a, "elastic", 2).await;
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let callers: Vec<_> = (0..4)
        .map(|c| {
            let client = b.client();
            let (stop, done, at) = (stop.clone(), done.clone(), a.addr());
            tokio::spawn(async move {
                let mut errors = Vec::new();
                // Bounded in count; stopped by the flag long before.
                for i in 0..200_000u64 {
                    if stop.load(SeqCst) {
                        break;
                    }
                    let echo = Echo {
                        text: format!("{c}-{i}"),
                    };
                    match client.call_at(at, "elastic", echo).await {
                        Ok(_) => {
                            done.fetch_add(1, SeqCst);
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                errors
            })
        })
        .collect();
    let progress = |n: u64| {
        let done = done.clone();
        async move { wait_until(|| done.load(SeqCst) >= n, "calls made progress").await }
    };
    progress(200).await;
    for (step, instances) in [4, 1, 3].into_iter().enumerate() {
        fixture.service.scale(instances).await.expect("scale");
        assert_eq!(fixture.service.live_instances(), instances);
        progress(200 * (step as u64 + 2)).await;
    }
    stop.store(true, SeqCst);
    let mut errors = Vec::new();
    for caller in callers {
        errors.extend(within("a caller", caller).await.unwrap());
    }
    assert!(
        errors.is_empty(),
        "{} failed calls: {errors:?}",
        errors.len()
    );
    assert_eq!(fixture.service.restarts(), 0);
    converge(&a, "the advertised actor count", |r| {
        r.instances("elastic")
            .first()
            .is_some_and(|i| i.actors == 3)
    })
    .await;
    b.shutdown().await;
    a.shutdown().await;
}

/// Past its restart budget a service fails as a whole: it leaves every node's registry at once,
/// the other service on its node keeps answering, health says why, and it comes back by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_past_its_budget_is_withdrawn_everywhere_while_its_neighbour_serves() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let b = node_builder(&ca, "b")
        .seeds([a.addr().to_string()])
        .start()
        .await
        .expect("node starts");
    let fragile = start_fixture_with(&a, "fragile", |s| {
        s.restart_policy(RestartPolicy {
            max_restarts: 1,
            within: Duration::from_secs(600),
            ..RestartPolicy::default()
        })
        .recovery(Recovery::Manual)
    })
    .await;
    start_fixture(&a, "steady", 1).await;
    let both_on_a = |r: &colony::Registry| {
        r.instances("fragile").len() == 1 && r.instances("steady").len() == 1
    };
    converge(&b, "fragile and steady on a", both_on_a).await;
    converge(&a, "fragile and steady on a", both_on_a).await;

    // The first panic is within the budget: one restart.
    let _ = a.client().call("fragile", Panic {}).await;
    wait_restarted(&fragile, 1, 1).await;
    assert_eq!(fragile.service.health().unwrap().escalations, 0);
    // The second is past it: the service fails and goes up to the node.
    let _ = a.client().call("fragile", Panic {}).await;
    let failed = |n: &Node| {
        n.health()
            .services
            .iter()
            .any(|s| s.name == "fragile" && s.status == ServiceStatus::Failed)
    };
    wait_until(|| failed(&a), "fragile reported failed").await;
    converge(&b, "fragile withdrawn", |r| {
        r.instances("fragile").is_empty()
    })
    .await;
    converge(&a, "fragile withdrawn", |r| {
        r.instances("fragile").is_empty()
    })
    .await;

    // Not routable from anywhere, and nothing else is hurt.
    let err = expect_err(a.client().call("fragile", Count {}).await, "local call");
    assert!(
        matches!(err.code(), Code::NotFound | Code::Unavailable),
        "{err}"
    );
    for caller in [&a, &b] {
        let echoed = caller
            .client()
            .call("steady", Echo { text: "hi".into() })
            .await
            .expect("the neighbour keeps serving");
        assert_eq!(echoed.text, "hi");
    }

    let health = a.health();
    assert_eq!(health.status, NodeStatus::Degraded);
    let row = |h: &colony::NodeHealth, name: &str| {
        h.services.iter().find(|s| s.name == name).cloned().unwrap()
    };
    let fragile_row = row(&health, "fragile");
    assert_eq!(fragile_row.escalations, 1);
    assert_eq!(fragile_row.live, 0);
    assert_eq!(fragile_row.restart_in_ms, None, "manual recovery");
    let why = fragile_row.last_failure.unwrap_or_default();
    assert!(why.contains("fixture asked to panic"), "{why}");
    assert_eq!(row(&health, "steady").status, ServiceStatus::Running);

    // Restarted by hand: back in routing and gossip, with fresh state.
    fragile.service.restart().await.expect("restarts");
    converge(&b, "fragile back", |r| r.instances("fragile").len() == 1).await;
    assert_eq!(b.client().call("fragile", Count {}).await.unwrap(), 1);
    let back = fragile.service.health().unwrap();
    assert_eq!((back.status, back.escalations), (ServiceStatus::Running, 1));
    assert_eq!(a.health().status, NodeStatus::Healthy);
    let again = expect_err(
        fragile.service.restart().await,
        "restart of a running service",
    );
    assert_eq!(again.code(), Code::Conflict, "{again}");

    b.shutdown().await;
    a.shutdown().await;
}

/// With a cool-down, a failed service comes back by itself: a crash loop needs no human.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_service_restarts_after_its_cool_down() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let fragile = start_fixture_with(&a, "fragile", |s| {
        s.restart_policy(RestartPolicy {
            max_restarts: 0,
            ..RestartPolicy::default()
        })
        .recovery(Recovery::CoolDown {
            first: Duration::from_millis(50),
            max: Duration::from_secs(1),
        })
    })
    .await;
    for escalations in 1..=2 {
        let _ = a.client().call("fragile", Panic {}).await;
        let service = fragile.service.clone();
        wait_until(
            move || {
                service.health().is_some_and(|h| {
                    h.escalations == escalations && h.status == ServiceStatus::Running
                })
            },
            &format!("restart after escalation {escalations}"),
        )
        .await;
        assert!(a.client().call("fragile", Count {}).await.is_ok());
    }
    a.shutdown().await;
}

/// A `started` hook that fails makes `spawn` fail with its reason; `stopping` runs on stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_gate_the_start_and_run_on_stop() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    struct Hooked {
        refuse: bool,
        stops: Arc<AtomicU32>,
        ready: bool,
    }
    impl colony::Lifecycle for Hooked {
        async fn started(&mut self) -> Result<(), colony::Error> {
            if self.refuse {
                return Err(colony::Error::unavailable("database unreachable"));
            }
            self.ready = true;
            Ok(())
        }
        async fn stopping(&mut self) {
            self.stops.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl colony::Handler<Count> for Hooked {
        async fn handle(&mut self, _: Count, _: &colony::Context) -> Result<u64, colony::Error> {
            Ok(u64::from(self.ready))
        }
    }

    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let stops = Arc::new(AtomicU32::new(0));
    let spawn = |refuse: bool| {
        let stops = stops.clone();
        a.service("hooked")
            .instances(3)
            .handler::<Count>()
            .lifecycle()
            .spawn(move || Hooked {
                refuse,
                stops: stops.clone(),
                ready: false,
            })
    };
    let err = expect_err(spawn(true).await, "a start hook that fails");
    assert!(err.detail().contains("database unreachable"), "{err}");
    assert!(a.services().is_empty(), "nothing half-started is left");
    assert_eq!(
        stops.load(Ordering::SeqCst),
        0,
        "never started, never stopped"
    );

    let service = spawn(false).await.expect("starts");
    assert_eq!(
        a.client().call("hooked", Count {}).await.unwrap(),
        1,
        "ready"
    );
    service.scale(1).await.unwrap();
    wait_until(
        || stops.load(Ordering::SeqCst) == 2,
        "stopping hooks of the two scaled away",
    )
    .await;
    service.stop().await;
    assert_eq!(
        stops.load(Ordering::SeqCst),
        3,
        "and of the last one, on stop"
    );
    a.shutdown().await;
}

/// The service leaves routing the moment its supervisor gives up, without waiting for the calls
/// its other instances are handling; those still finish and are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_is_withdrawn_at_once_while_its_other_calls_finish() {
    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let fragile = start_fixture_with(&a, "fragile", |s| {
        s.instances(2)
            .restart_policy(RestartPolicy {
                max_restarts: 0,
                ..RestartPolicy::default()
            })
            .recovery(Recovery::Manual)
    })
    .await;
    let client = a.client();
    let held = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .request("fragile", Hold { tag: "held".into() })
                .timeout(HANG_LIMIT)
                .await
        })
    };
    let stats = fragile.stats.clone();
    wait_until(move || stats.started_count() == 1, "the held call to start").await;
    // The idle instance takes the panic: past a budget of 0, the service gives up.
    let _ = client.call("fragile", Panic {}).await;
    let service = fragile.service.clone();
    wait_until(
        move || {
            service
                .health()
                .is_some_and(|h| h.status == ServiceStatus::Failed)
        },
        "fragile failed",
    )
    .await;
    converge(&a, "fragile withdrawn", |r| {
        r.instances("fragile").is_empty()
    })
    .await;
    assert!(
        !held.is_finished(),
        "withdrawn while its other call still runs"
    );
    fragile.stats.open_gate();
    let reply = within("the held call", held).await.expect("task");
    assert_eq!(reply.expect("the held call is answered").tag, "held");
    a.shutdown().await;
}

/// Health says `starting` while the `started` hooks run, and the service is not callable yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_starting_while_started_hooks_run() {
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    struct Slow(Arc<Semaphore>);
    impl colony::Lifecycle for Slow {
        async fn started(&mut self) -> Result<(), colony::Error> {
            let _ = self.0.acquire().await;
            Ok(())
        }
    }
    impl colony::Handler<Count> for Slow {
        async fn handle(&mut self, _: Count, _: &colony::Context) -> Result<u64, colony::Error> {
            Ok(1)
        }
    }

    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    let gate = Arc::new(Semaphore::new(0));
    let spawning = {
        let gate = gate.clone();
        let service = a.service("slow").handler::<Count>().lifecycle();
        tokio::spawn(service.spawn(move || Slow(gate.clone())))
    };
    let status = |a: &Node| {
        a.health()
            .services
            .iter()
            .find(|s| s.name == "slow")
            .map(|s| s.status)
    };
    wait_until(
        || status(&a) == Some(ServiceStatus::Starting),
        "slow starting",
    )
    .await;
    assert_eq!(a.health().status, NodeStatus::Degraded, "not ready yet");
    let err = expect_err(
        a.client().call("slow", Count {}).await,
        "a call while starting",
    );
    assert_eq!(err.code(), Code::NotFound, "{err}");
    gate.add_permits(1);
    within("spawn", spawning)
        .await
        .expect("task")
        .expect("starts");
    assert_eq!(status(&a), Some(ServiceStatus::Running));
    assert_eq!(a.client().call("slow", Count {}).await.unwrap(), 1);
    a.shutdown().await;
}

/// A service's own status follows its instances: degraded while some restart, restarting while
/// all do, running again after; and a service whose temporary instances all ended is withdrawn
/// and leaves health, without counting as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_health_follows_its_instances() {
    use colony::{ChildPolicy, RestartStrategy};

    let ca = new_ca();
    let a = start_node(&ca, "a").await;
    // A long backoff keeps the panicked instances down while the test looks.
    let slow_restarts = RestartPolicy {
        backoff: Duration::from_secs(2),
        max_backoff: Duration::from_secs(2),
        ..RestartPolicy::default()
    };
    let pair =
        start_fixture_with(&a, "pair", |s| s.instances(2).restart_policy(slow_restarts)).await;
    let status = |f: &FixtureService| f.service.health().map(|h| (h.status, h.live));
    let _ = a.client().call("pair", Panic {}).await;
    wait_until(
        || status(&pair) == Some((ServiceStatus::Degraded, 1)),
        "pair degraded",
    )
    .await;
    let _ = a.client().call("pair", Panic {}).await;
    wait_until(
        || status(&pair) == Some((ServiceStatus::Restarting, 0)),
        "pair restarting",
    )
    .await;
    let err = expect_err(
        a.client().call("pair", Count {}).await,
        "a call while restarting",
    );
    assert_eq!(err.code(), Code::Unavailable, "refused, not gone: {err}");
    wait_until(
        || status(&pair) == Some((ServiceStatus::Running, 2)),
        "pair running again",
    )
    .await;

    let once = start_fixture_with(&a, "once", |s| {
        s.restart_policy(RestartPolicy {
            strategy: RestartStrategy::OneForOne,
            child: ChildPolicy::Temporary,
            ..RestartPolicy::default()
        })
    })
    .await;
    converge(&a, "once advertised", |r| r.instances("once").len() == 1).await;
    let _ = a.client().call("once", Panic {}).await;
    converge(&a, "once withdrawn", |r| r.instances("once").is_empty()).await;
    wait_until(|| once.service.health().is_none(), "once gone from health").await;
    assert!(
        a.health().services.iter().all(|s| s.name != "once"),
        "an ended service is not reported failed"
    );
    a.shutdown().await;
}
