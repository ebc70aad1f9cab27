//! Surviving failing instances: outlier ejection and probes, never ejecting the last instance,
//! retries on another instance (always when undelivered, after delivery only for idempotent
//! calls), and the retry budget. Helpers and the `svc` service: `tests/support/selection.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use colony::layer::{BoxFuture, ServeLayer, ServeNext};
use colony::TransportConfig;
use colony::{BudgetPolicy, CallDefaults, Code, Context, Error, Origin, OutlierPolicy, Strategy};
use colony_tests::selection::*;
use colony_tests::*;

// ---------------------------------------------------------------------------------------------
// 4. Outlier ejection
// ---------------------------------------------------------------------------------------------

fn ejecting_defaults(failures: u32) -> CallDefaults {
    CallDefaults {
        strategy: Strategy::RoundRobin,
        outliers: OutlierPolicy {
            consecutive_failures: failures,
            base_ejection: Duration::from_millis(1500),
            max_ejection: Duration::from_secs(3),
        },
        ..CallDefaults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_is_ejected_then_probed_back() {
    let ca = new_ca();
    let cluster = Cluster::start(&ca, |b| b.client_defaults(ejecting_defaults(3))).await;
    let client = cluster.caller.client();
    let s0 = &cluster.knobs[0];
    s0.failing.store(true, SeqCst);

    // Round-robin reaches s0 every third call; it fails three times in a row.
    let mut failures = 0;
    within("three failures on s0", async {
        while s0.executed() < 3 {
            match client.request(SVC, Flaky {}).await {
                Ok(a) => assert_ne!(a.node, "s0"),
                Err(e) => {
                    assert_eq!((e.code(), e.origin()), (Code::Unavailable, Origin::Handler));
                    failures += 1;
                }
            }
        }
    })
    .await;
    assert_eq!(failures, 3);
    let r = wait_report(&client, "s0", "s0 ejected", |r| r.health == "ejected").await;
    assert_eq!(r.ejections, 1);
    assert_eq!(r.consecutive_failures, 3);
    assert!(r.ejected_for_ms.is_some_and(|ms| ms <= 1500), "{r:?}");

    // While ejected, s0 gets nothing and every call succeeds elsewhere.
    let answers = sequential(&client, Strategy::RoundRobin, 30).await;
    assert_eq!(s0.executed(), 3, "an ejected instance took calls");
    assert_eq!(share(&tally(&answers), "s0"), 0);
    let r = report(&client, "s0").await.expect("s0 in the report");
    assert_eq!(r.health, "ejected", "still inside its ejection: {r:?}");

    // s0 recovers; after its ejection one probe call brings it back.
    s0.failing.store(false, SeqCst);
    let r = within("s0 healthy again", async {
        loop {
            client.request(SVC, Flaky {}).await.expect("call");
            let r = report(&client, "s0").await.expect("s0 in the report");
            if r.health == "healthy" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(r.consecutive_failures, 0);
    assert_eq!(r.ejections, 1);
    assert!(s0.executed() > 3, "the probe ran on s0");
    // Back in rotation: round-robin gives it its third again.
    let before = s0.executed();
    let seen = tally(&sequential(&client, Strategy::RoundRobin, 30).await);
    assert_eq!(share(&seen, "s0"), 10, "{seen:?}");
    assert_eq!(s0.executed() - before, 10);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_instance_is_never_ejected() {
    let ca = new_ca();
    let cluster = Cluster::of(&ca, 1, |b| b.client_defaults(ejecting_defaults(3))).await;
    let knobs = &cluster.knobs[0];
    knobs.failing.store(true, SeqCst);
    let client = cluster.caller.client();
    for _ in 0..20 {
        let err = expect_err(client.request(SVC, Flaky {}).await, "failing instance");
        assert_eq!(
            (err.code(), err.origin()),
            (Code::Unavailable, Origin::Handler)
        );
    }
    assert_eq!(
        knobs.executed(),
        20,
        "every call still reached the instance"
    );
    let r = report(&client, "s0").await.expect("s0 in the report");
    assert_eq!(r.health, "healthy", "{r:?}");
    assert_eq!(r.ejections, 0);
    assert_eq!(r.consecutive_failures, 20);
    assert_eq!((r.calls, r.failures), (20, 20));
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Retries go to another instance, and only when allowed
// ---------------------------------------------------------------------------------------------

/// Round-robin, no ejection, a budget that never runs out, no attempt abandoned for being slow
/// (an abandoned attempt may still run: executions would no longer add up): only the retry
/// rules decide.
fn retry_defaults() -> CallDefaults {
    CallDefaults {
        strategy: Strategy::RoundRobin,
        min_attempt_timeout: Duration::from_secs(10),
        outliers: OutlierPolicy {
            consecutive_failures: 1_000,
            ..OutlierPolicy::default()
        },
        retry_budget: BudgetPolicy {
            ratio: 1.0,
            floor: 1_000,
            window: Duration::from_secs(60),
        },
        ..CallDefaults::default()
    }
}

fn total(knobs: &[Arc<Knobs>]) -> u64 {
    knobs.iter().map(|k| k.executed()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_retry_elsewhere_and_delivered_ones_are_not_resent() {
    let ca = new_ca();
    let cluster = Cluster::start(&ca, |b| b.client_defaults(retry_defaults())).await;
    let client = cluster.caller.client();
    let s0 = &cluster.knobs[0];
    s0.failing.store(true, SeqCst);

    // Idempotent: every call succeeds; each of s0's executions is one failed attempt that was
    // sent again to another instance.
    const N: u64 = 60;
    let before = cluster.executed();
    for _ in 0..N {
        let a = within(
            "idempotent call",
            client.request(SVC, Flaky {}).idempotent(),
        )
        .await
        .expect("retried on a healthy instance");
        assert_ne!(a.node, "s0");
    }
    let after = cluster.executed();
    let on_s0 = after[0] - before[0];
    let elsewhere = (after[1] - before[1]) + (after[2] - before[2]);
    assert_eq!(elsewhere, N, "each call succeeded exactly once");
    assert!(
        on_s0 >= N / 4,
        "round-robin sent only {on_s0} first attempts to s0"
    );
    let r = report(&client, "s0").await.expect("s0 in the report");
    assert_eq!(r.failures, on_s0, "{r:?}");
    assert_eq!(r.health, "healthy");

    // Not idempotent: the handler's Unavailable reaches the caller, and the request is never
    // sent a second time.
    let mut failed = 0;
    let before = cluster.executed();
    for _ in 0..30 {
        let total_before = total(&cluster.knobs);
        match within("call", client.request(SVC, Flaky {})).await {
            Ok(a) => assert_ne!(a.node, "s0"),
            Err(e) => {
                assert_eq!(
                    (e.code(), e.origin()),
                    (Code::Unavailable, Origin::Handler),
                    "{e}"
                );
                failed += 1;
            }
        }
        assert_eq!(
            total(&cluster.knobs),
            total_before + 1,
            "one execution per non-idempotent call"
        );
    }
    let after = cluster.executed();
    assert_eq!(after[0] - before[0], failed, "every failure was s0's");
    assert_eq!(failed, 10, "round-robin reaches s0 every third call");
    cluster.shutdown().await;
}

/// Answers `Unavailable` before delivery while the node's `refusing` knob is set: what a node
/// that cannot take calls (shutting down) answers, origin `Server`.
struct Refuse(Arc<Knobs>);

impl ServeLayer for Refuse {
    fn serve<'a>(
        &'a self,
        _call: &'a Context,
        next: ServeNext<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if self.0.refusing.load(SeqCst) {
                self.0.refused.fetch_add(1, SeqCst);
                return Err(Error::unavailable(format!("{} refuses", self.0.node)));
            }
            next.run().await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_never_reached_a_handler_are_retried_without_idempotent() {
    let ca = new_ca();
    let mut cluster = Cluster::start_with(
        &ca,
        |b| {
            b.client_defaults(retry_defaults())
                .transport(TransportConfig {
                    // A dial to the crashed node below fails fast.
                    open_timeout: Duration::from_millis(300),
                    ..TransportConfig::default()
                })
        },
        |k, b| b.serve_layer(Refuse(k.clone())),
        1,
    )
    .await;
    let client = cluster.caller.client();
    let keys: Vec<String> = (0..60).map(|k| format!("k-{k}")).collect();
    let key = owners(&client, &keys)
        .await
        .into_iter()
        .find(|(_, node)| node == "s0")
        .map(|(key, _)| key)
        .expect("some key lands on s0");
    let keyed = || client.request(SVC, Who {}).key(&key);

    // s0 refuses before delivery (Unavailable, origin Server): the call goes elsewhere.
    let s0 = cluster.knobs[0].clone();
    s0.refusing.store(true, SeqCst);
    for _ in 0..3 {
        let before = total(&cluster.knobs);
        let refused = s0.refused.load(SeqCst);
        let a = within("refused call", keyed())
            .await
            .expect("retried after a refusal");
        assert_ne!(a.node, "s0");
        assert_eq!(s0.refused.load(SeqCst), refused + 1, "s0 was tried first");
        assert_eq!(total(&cluster.knobs), before + 1, "exactly one execution");
    }
    s0.refusing.store(false, SeqCst);
    assert_eq!(within("s0 again", keyed()).await.unwrap().node, "s0");

    // s0's service stops (NotFound from its server, before dispatch) while the caller still
    // routes there. Gossip may beat the call to the caller, so the race is run until the call
    // provably left with s0 still in the caller's view.
    let mut exercised = false;
    for _ in 0..5 {
        cluster.services[0].stop().await;
        let before = total(&cluster.knobs);
        let a = within("call to a stopped instance", keyed())
            .await
            .expect("retried after NotFound");
        let stale = cluster
            .caller
            .registry()
            .instances(SVC)
            .iter()
            .any(|i| i.node == "s0");
        assert_ne!(a.node, "s0");
        assert_eq!(total(&cluster.knobs), before + 1, "exactly one execution");
        exercised = stale;
        // Back again, after every view has lost the old advertisement (else a view could
        // count three instances just before it drops the old one).
        cluster.converge(2).await;
        cluster.services[0] = serve(&cluster.servers[0], &s0).await;
        cluster.converge(3).await;
        if exercised {
            break;
        }
    }
    assert!(
        exercised,
        "the caller's view never still held the stopped instance"
    );
    assert_eq!(within("s0 again", keyed()).await.unwrap().node, "s0");

    // s0 crashes (dropped, no goodbye): the connection fails before the request is
    // acknowledged, long before the failure detector notices, and the call goes elsewhere.
    let failures = report(&client, "s0")
        .await
        .expect("s0 in the report")
        .failures;
    drop(cluster.servers.remove(0));
    let rest = &cluster.knobs[1..];
    let before = total(rest);
    let a = within("call to a crashed node", keyed())
        .await
        .expect("retried after the connection failed");
    assert_ne!(a.node, "s0");
    assert_eq!(total(rest), before + 1, "exactly one execution");
    assert!(
        cluster
            .caller
            .registry()
            .instances(SVC)
            .iter()
            .any(|i| i.node == "s0"),
        "the crash was noticed before the call: it did not test a lost connection"
    );
    let r = report(&client, "s0").await.expect("s0 in the report");
    assert_eq!(r.failures, failures + 1, "the attempt on s0 failed: {r:?}");
    cluster.services.remove(0);
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 7. The retry budget
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_when_everything_fails() {
    const N: u64 = 50;
    let ca = new_ca();
    let cluster = Cluster::start(&ca, |b| {
        b.client_defaults(CallDefaults {
            retry_budget: BudgetPolicy {
                ratio: 0.1,
                floor: 5,
                window: Duration::from_secs(60),
            },
            ..retry_defaults()
        })
    })
    .await;
    for k in &cluster.knobs {
        k.failing.store(true, SeqCst);
    }
    let client = cluster.caller.client();
    let before = total(&cluster.knobs);
    for _ in 0..N {
        let call = client.request(SVC, Flaky {}).idempotent().retries(3);
        let err = expect_err(within("failing call", call).await, "all instances fail");
        assert_eq!(
            (err.code(), err.origin()),
            (Code::Unavailable, Origin::Handler)
        );
    }
    let executions = total(&cluster.knobs) - before;
    // Without a budget: 4 attempts per call, 200. With it: one per call, plus the floor, plus
    // a tenth of the calls.
    assert!(
        executions <= N + 5 + N / 10,
        "{executions} executions for {N} calls: the budget did not hold"
    );
    assert!(
        executions >= N + 5,
        "{executions} executions for {N} calls: the floor was not used"
    );
    cluster.shutdown().await;
}

/// A caller's own deadline running out says nothing about the instance: a slow but healthy
/// instance called with deadlines too short for it is never charged failures nor ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_short_deadline_is_not_held_against_the_instance() {
    let ca = new_ca();
    let cluster = Cluster::of(&ca, 2, |b| b.client_defaults(ejecting_defaults(3))).await;
    cluster.knobs[0].slow_ms.store(300, SeqCst);
    let client = cluster.caller.client();
    for _ in 0..10 {
        let err = expect_err(
            client
                .request(SVC, Slow {})
                .exclude_node("s1")
                .timeout(Duration::from_millis(20))
                .await,
            "a deadline shorter than the handler",
        );
        // The caller gave up (Client), or the server saw the deadline pass while the call
        // queued behind a slow one (Server): either way, the deadline was the caller's.
        assert_eq!(err.code(), Code::Timeout, "{err}");
        assert_ne!(err.origin(), Origin::Handler, "{err}");
    }
    let r = report(&client, "s0").await.expect("s0 in the report");
    assert_eq!(r.health, "healthy", "{r:?}");
    assert_eq!((r.ejections, r.consecutive_failures), (0, 0), "{r:?}");
    cluster.shutdown().await;
}

/// A hedged call whose first instance is slow is answered by a second instance: every call
/// routed to the slow one first still gets its answer from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_call_is_answered_elsewhere_when_the_first_instance_is_slow() {
    let ca = new_ca();
    let cluster = Cluster::of(&ca, 2, |b| {
        b.client_defaults(CallDefaults {
            strategy: Strategy::RoundRobin,
            // No attempt is abandoned here: only the hedge can move a call off the slow one.
            min_attempt_timeout: Duration::from_secs(5),
            ..CallDefaults::default()
        })
    })
    .await;
    let k0 = &cluster.knobs[0];
    let client = cluster.caller.client();
    // Both answer at once first, so each has a latency estimate: the hedge waits about the
    // first instance's 95th percentile.
    for _ in 0..20 {
        client.request(SVC, Slow {}).await.expect("warm-up call");
    }
    k0.slow_ms.store(500, SeqCst);
    let started_on_s0 = k0.executed();
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        let answer = client
            .request(SVC, Slow {})
            .hedge()
            .timeout(Duration::from_secs(10))
            .await
            .expect("hedged call");
        *answered.entry(answer.node).or_default() += 1;
    }
    assert_eq!(answered.get("s1"), Some(&10), "{answered:?}");
    assert!(
        k0.executed() > started_on_s0,
        "round-robin sent first attempts to s0, and their hedges answered: {answered:?}"
    );
    cluster.shutdown().await;
}
