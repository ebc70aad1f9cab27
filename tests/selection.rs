//! Choosing an instance across a cluster: strategies and their spread, avoiding slow instances,
//! consistent hashing, filters, the local instance as one of the set, and the least-loaded
//! instance within a node. Helpers and the `svc` service: `tests/support/selection.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use colony::{CallDefaults, Client, Code, Origin, Strategy};
use colony_tests::selection::*;
use colony_tests::*;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// 1. Strategies spread as they say
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_strategy_spreads_calls_as_documented() {
    let ca = new_ca();
    let cluster = Cluster::start(&ca, |b| b).await;
    let client = cluster.caller.client();
    let all = ["s0", "s1", "s2"];
    const N: usize = 600;

    // Round-robin, sequential: exactly a third each.
    let before = cluster.executed();
    let seen = tally(&sequential(&client, Strategy::RoundRobin, N).await);
    assert_eq!(
        all.map(|n| share(&seen, n)),
        [N / 3; 3],
        "round-robin: {seen:?}"
    );
    let after = cluster.executed();
    for i in 0..3 {
        assert_eq!(
            after[i] - before[i],
            (N / 3) as u64,
            "s{i} counted its own executions"
        );
    }

    // Random: uniform within 6 sigma.
    let seen = tally(&sequential(&client, Strategy::Random, N).await);
    assert_uniform(&seen, &all, N, "random");

    // Least outstanding, one call at a time: always a tie at zero, broken uniformly.
    let seen = tally(&sequential(&client, Strategy::LeastOutstanding, N).await);
    assert_uniform(&seen, &all, N, "least outstanding");

    // Power of two choices with calls in flight: the in-flight factor keeps any one instance
    // from taking everything, so every instance takes a real share.
    let seen = tally(&concurrent(&client, Strategy::PowerOfTwoChoices, 6, N / 6).await);
    assert_eq!(seen.values().sum::<usize>(), N);
    for node in all {
        assert!(
            share(&seen, node) >= N / 10,
            "power of two choices starved {node}: {seen:?}"
        );
    }

    // Local first, from a node that runs the service: always its own instance, never encoded.
    let s0 = cluster.servers[0].client();
    let answers = sequential(&s0, Strategy::LocalFirst, 100).await;
    assert!(
        answers.iter().all(|a| a.node == "s0" && !a.remote),
        "local first left the node: {:?}",
        tally(&answers)
    );
    // Local first from a node without the service: the remote instances share the calls.
    let seen = tally(&sequential(&client, Strategy::LocalFirst, 60).await);
    assert_eq!(seen.values().sum::<usize>(), 60);
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Slow instances are avoided
// ---------------------------------------------------------------------------------------------

/// A `Slow` call by name that only `s0` may take.
fn only_s0(client: &Client) -> colony::Call<'_, Slow> {
    client
        .request(SVC, Slow {})
        .exclude_node("s1")
        .exclude_node("s2")
}

/// `s0` answers one call slowly (a real latency sample), then holds `held` calls by name at its
/// gate; `workers` tasks then make `calls` calls each with `strategy` (`None`: the node's
/// default). The held instance must get none of them.
async fn slow_instance_is_avoided(strategy: Option<Strategy>) {
    const HELD: u64 = 3;
    const WORKERS: usize = 4;
    const CALLS: usize = 25;
    let ca = new_ca();
    // Enough actors on each node that held calls do not queue behind each other.
    let cluster = Cluster::start_with(&ca, |b| b, |_, b| b, 8).await;
    let client = cluster.caller.client();
    let s0 = &cluster.knobs[0];
    // One slow answer from s0 through the selector: its latency is now known to be high.
    s0.slow_ms.store(200, SeqCst);
    let warm = within("slow warm-up", only_s0(&client))
        .await
        .expect("slow call");
    assert_eq!(warm.node, "s0");

    // Then s0 holds calls: HELD of them by name, counted as outstanding by the selector.
    s0.holding.store(true, SeqCst);
    let mut held = JoinSet::new();
    for _ in 0..HELD {
        let client = client.clone();
        held.spawn(async move { only_s0(&client).await });
    }
    wait_until(|| s0.held.load(SeqCst) == HELD, "s0 holding its calls").await;
    let r = wait_report(&client, "s0", "s0 outstanding", |r| {
        r.outstanding == HELD as u32
    })
    .await;
    assert_eq!(r.health, "healthy");

    // Concurrent calls by name: every one goes to the idle instances. One that went to s0
    // would wait at the gate; the per-call timeout turns that into a visible error.
    let before = cluster.executed();
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        let client = client.clone();
        workers.spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..CALLS {
                let mut call = client.request(SVC, Slow {}).timeout(Duration::from_secs(5));
                if let Some(strategy) = strategy {
                    call = call.strategy(strategy);
                }
                answers.push(call.await);
            }
            answers
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = within("workers", workers.join_next()).await {
        answers.extend(done.expect("worker"));
    }
    let answers: Vec<Answer> = answers
        .into_iter()
        .map(|r| r.expect("a call that avoided the held instance"))
        .collect();
    let seen = tally(&answers);
    let after = cluster.executed();
    assert_eq!(
        s0.held.load(SeqCst),
        HELD,
        "{strategy:?}: a later call went to the held instance: {seen:?}"
    );
    assert_eq!(after[0], before[0], "{strategy:?}: s0 ran later calls");
    assert_eq!(share(&seen, "s0"), 0);
    assert_eq!(
        share(&seen, "s1") + share(&seen, "s2"),
        WORKERS * CALLS,
        "{seen:?}"
    );
    assert_eq!(
        (after[1] - before[1]) + (after[2] - before[2]),
        (WORKERS * CALLS) as u64
    );

    // The held calls were not lost: they finish on s0 once the gate opens.
    s0.gate.close();
    while let Some(done) = within("held calls", held.join_next()).await {
        assert_eq!(done.expect("task").expect("held call").node, "s0");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_avoids_a_held_instance() {
    slow_instance_is_avoided(Some(Strategy::LeastOutstanding)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_strategy_avoids_a_slow_held_instance() {
    slow_instance_is_avoided(None).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Consistent hashing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_calls_stick_and_only_the_changed_instances_keys_move() {
    const KEYS: usize = 240;
    let ca = new_ca();
    let mut cluster = Cluster::start(&ca, |b| b).await;
    let client = cluster.caller.client();
    let keys: Vec<String> = (0..KEYS).map(|k| format!("user-{k}")).collect();

    let first = owners(&client, &keys).await;
    // Same key, same node, whatever the strategy.
    assert_eq!(owners(&client, &keys).await, first, "keys are sticky");
    for strategy in [Strategy::Random, Strategy::RoundRobin] {
        for key in keys.iter().take(20) {
            let a = client
                .request(SVC, Who {})
                .key(key)
                .strategy(strategy)
                .await
                .unwrap();
            assert_eq!(a.node, first[key], "{strategy:?} ignored the key");
        }
    }
    // Every node owns a share (6 sigma of a third).
    let counts = first.values().fold(BTreeMap::new(), |mut m, n| {
        *m.entry(n.clone()).or_insert(0) += 1;
        m
    });
    assert_uniform(&counts, &["s0", "s1", "s2"], KEYS, "key owners");

    // s2's service stops: exactly its keys move, all to the survivors.
    cluster.services[2].stop().await;
    cluster.converge(2).await;
    let without_s2 = owners(&client, &keys).await;
    let mut moved = 0;
    for key in &keys {
        if without_s2[key] != first[key] {
            assert_eq!(first[key], "s2", "{key} moved off a node that stayed");
            moved += 1;
        } else {
            assert_ne!(first[key], "s2", "{key} stayed on a stopped instance");
        }
    }
    assert_eq!(moved, counts["s2"], "exactly s2's keys moved");
    assert!(without_s2.values().all(|n| n != "s2"));

    // It comes back with the same id: every key returns to where it was.
    cluster.services[2] = serve(&cluster.servers[2], &cluster.knobs[2]).await;
    cluster.converge(3).await;
    assert_eq!(
        owners(&client, &keys).await,
        first,
        "the same instance takes its keys back"
    );

    // A fourth instance joins: only keys that move to it move, about a quarter of them.
    let s3 = start(&ca, "s3", Some(cluster.caller.addr()), |b| b).await;
    let k3 = Knobs::new("s3");
    serve(&s3, &k3).await;
    cluster.converge(4).await;
    let with_s3 = owners(&client, &keys).await;
    let mut moved_in = 0;
    for key in &keys {
        if with_s3[key] != first[key] {
            assert_eq!(with_s3[key], "s3", "{key} moved between nodes that stayed");
            moved_in += 1;
        }
    }
    // A quarter of 240 is 60, sd = sqrt(240 * 1/4 * 3/4) = 6.7; 6 sigma = 40.
    assert!(
        (20..=100).contains(&moved_in),
        "{moved_in} of {KEYS} keys moved to the new instance"
    );
    cluster.servers.push(s3);
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Filters
// ---------------------------------------------------------------------------------------------

/// The nodes that answered 30 `Who` calls made through `filter`: with round-robin, every
/// instance the filter admits.
async fn filtered_nodes(
    client: &Client,
    filter: impl Fn(colony::Call<'_, Who>) -> colony::Call<'_, Who>,
) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    for _ in 0..30 {
        let a = within("filtered call", filter(client.request(SVC, Who {})))
            .await
            .expect("filtered call");
        nodes.insert(a.node);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_route_only_to_matching_instances() {
    let ca = new_ca();
    let caller = start(&ca, "caller", None, |b| {
        b.client_defaults(CallDefaults {
            strategy: Strategy::RoundRobin,
            ..CallDefaults::default()
        })
    })
    .await;
    let specs = [
        ("s0", "1.0.0", "eu"),
        ("s1", "1.2.3", "us"),
        ("s2", "2.0.0", "eu"),
    ];
    let mut servers = Vec::new();
    let mut knobs = Vec::new();
    for (name, version, zone) in specs {
        let node = start(&ca, name, Some(caller.addr()), |b| b).await;
        let k = Knobs::new(name);
        serve_as(&node, SVC, &k, version, &[("zone", zone)], 1).await;
        servers.push(node);
        knobs.push(k);
    }
    for node in std::iter::once(&caller).chain(&servers) {
        converge(node, "three instances", |r| r.instances(SVC).len() == 3).await;
    }
    let client = caller.client();
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();

    // An exact version is exact (as a caret range, 1.0.0 would admit 1.2.3 too).
    assert_eq!(
        filtered_nodes(&client, |c| c.version("1.0.0")).await,
        set(&["s0"])
    );
    assert_eq!(
        filtered_nodes(&client, |c| c.version("1.2.3")).await,
        set(&["s1"])
    );
    assert_eq!(
        filtered_nodes(&client, |c| c.version("^1.0")).await,
        set(&["s0", "s1"])
    );
    assert_eq!(
        filtered_nodes(&client, |c| c.version(">=1.1, <3")).await,
        set(&["s1", "s2"])
    );
    assert_eq!(
        filtered_nodes(&client, |c| c.label("zone", "eu")).await,
        set(&["s0", "s2"])
    );
    assert_eq!(
        filtered_nodes(&client, |c| c.exclude_node("s0")).await,
        set(&["s1", "s2"])
    );
    assert_eq!(
        filtered_nodes(&client, |c| c.version("^1").label("zone", "eu")).await,
        set(&["s0"])
    );
    assert_eq!(
        filtered_nodes(&client, |c| c.exclude_node("s0").exclude_node("s2")).await,
        set(&["s1"])
    );
    // Positive control: no filter reaches all three.
    assert_eq!(
        filtered_nodes(&client, |c| c).await,
        set(&["s0", "s1", "s2"])
    );

    let executed = |k: &[Arc<Knobs>]| k.iter().map(|k| k.executed()).sum::<u64>();
    let before = executed(&knobs);
    let err = expect_err(
        client.request(SVC, Who {}).version(">=1.0 <<2").await,
        "malformed range",
    );
    assert_eq!(
        (err.code(), err.origin()),
        (Code::BadRequest, Origin::Client),
        "{err}"
    );
    for filter in [
        client.request(SVC, Who {}).version("3.0.0"),
        client.request(SVC, Who {}).version("^3"),
        client.request(SVC, Who {}).label("zone", "mars"),
        client
            .request(SVC, Who {})
            .label("zone", "us")
            .version("2.0.0"),
        client
            .request(SVC, Who {})
            .exclude_node("s0")
            .exclude_node("s1")
            .exclude_node("s2"),
    ] {
        let err = expect_err(filter.await, "no instance matches");
        assert_eq!(
            (err.code(), err.origin()),
            (Code::NotFound, Origin::Client),
            "{err}"
        );
    }
    assert_eq!(
        executed(&knobs),
        before,
        "a refused filter reached a handler"
    );
    shutdown_all(servers.into_iter().chain([caller])).await;
}

// ---------------------------------------------------------------------------------------------
// 10. The local instance is one of the set
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_instance_takes_its_share_of_round_robin() {
    let ca = new_ca();
    let cluster = Cluster::start(&ca, |b| b).await;
    let s0 = cluster.servers[0].client();
    let answers = sequential(&s0, Strategy::RoundRobin, 300).await;
    let seen = tally(&answers);
    assert_eq!(
        ["s0", "s1", "s2"].map(|n| share(&seen, n)),
        [100; 3],
        "{seen:?}"
    );
    assert!(
        answers.iter().all(|a| a.remote == (a.node != "s0")),
        "only s0's own answers are in-process"
    );
    assert_eq!(cluster.knobs[0].executed(), 100);
    let reports = s0.instance_report(SVC).await;
    assert_eq!(reports.len(), 3, "{reports:?}");
    for r in &reports {
        assert_eq!(r.local, r.node == "s0", "{r:?}");
        assert_eq!(r.calls, 100, "{r:?}");
    }
    cluster.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 11. Within a node: the instance with the fewest messages waiting
// ---------------------------------------------------------------------------------------------

/// Within a node, a call goes to the instance with the fewest messages waiting. A caller that
/// sends its next call as soon as it has the reply must find the idle instance free (its depth
/// drops before the reply is sent), not tied with the busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_a_node_calls_skip_a_busy_instance() {
    let ca = new_ca();
    let node = start_node(&ca, "solo").await;
    let knobs = Knobs::new("solo");
    serve_as(&node, SVC, &knobs, "1.0.0", &[], 2).await;
    knobs.holding.store(true, SeqCst);
    let client = node.client();
    let held = {
        let client = client.clone();
        tokio::spawn(async move { client.call(SVC, Slow {}).await })
    };
    wait_until(|| knobs.held.load(SeqCst) == 1, "one instance busy").await;
    let mut instances = BTreeSet::new();
    for _ in 0..20 {
        // Queued behind the held call, this would time out.
        let a = within(
            "call while one instance is busy",
            client.request(SVC, Who {}).timeout(Duration::from_secs(5)),
        )
        .await
        .expect("the idle instance answers");
        instances.insert(a.instance);
    }
    assert_eq!(instances.len(), 1, "only the idle instance answered");
    knobs.gate.close();
    let busy = within("held call", held).await.unwrap().expect("held call");
    assert!(
        !instances.contains(&busy.instance),
        "the held instance was skipped"
    );
    within("shutdown", node.shutdown()).await;
}
