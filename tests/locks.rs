//! Locks and leader election between nodes in one process: grants, contention, renewal,
//! release, fencing tokens, bad input. Multi-process failures are in `locks_processes.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colony::{Code, Node};
use colony_tests::{converge, expect_err, new_ca, node_builder, within};

/// Short leases keep the start-up quarantine short.
const MAX_TTL: Duration = Duration::from_millis(600);
/// Long enough to wait out the quarantine after start.
const PATIENT: Duration = Duration::from_secs(20);

async fn cluster(n: usize) -> Vec<Node> {
    let ca = new_ca();
    let first = node_builder(&ca, "n0")
        .lock_max_ttl(MAX_TTL)
        .start()
        .await
        .unwrap();
    let seed = first.addr().to_string();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(
            node_builder(&ca, &format!("n{i}"))
                .lock_max_ttl(MAX_TTL)
                .seeds([seed.clone()])
                .start()
                .await
                .unwrap(),
        );
    }
    for node in &nodes {
        converge(node, "every member", |r| r.members().len() == n).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_at_a_time_and_each_new_holder_has_a_larger_token() {
    let nodes = cluster(3).await;
    let first = within(
        "first acquisition",
        nodes[0].lock("k").ttl(MAX_TTL).wait(PATIENT),
    )
    .await
    .unwrap();
    assert!(first.is_held());
    let refused = expect_err(
        within("contended try", nodes[1].lock("k").ttl(MAX_TTL)).await,
        "a held key",
    );
    assert_eq!(refused.code(), Code::Conflict, "{refused}");
    assert!(
        refused.detail().contains("n0"),
        "names the holder: {refused}"
    );
    let token = first.token();
    within("release", first.release()).await.unwrap();
    let second = within("after release", nodes[2].lock("k").ttl(MAX_TTL))
        .await
        .unwrap();
    assert!(second.token() > token, "{} > {token}", second.token());
    // Dropping frees it too.
    let token = second.token();
    drop(second);
    let third = within(
        "after drop",
        nodes[1].lock("k").ttl(MAX_TTL).wait(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert!(third.token() > token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contending_tasks_on_three_nodes_never_overlap_and_tokens_only_grow() {
    let nodes = cluster(3).await;
    // Wait out the quarantine once.
    drop(
        within("warm", nodes[0].lock("hot").ttl(MAX_TTL).wait(PATIENT))
            .await
            .unwrap(),
    );
    let inside = Arc::new(AtomicBool::new(false));
    let fence = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut tasks = Vec::new();
    for node in &nodes {
        for _ in 0..4 {
            let client = node.client();
            let (inside, fence) = (inside.clone(), fence.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    let guard = client
                        .lock("hot")
                        .ttl(MAX_TTL)
                        .wait(Duration::from_secs(30))
                        .await
                        .expect("acquired within the wait");
                    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                    fence.lock().unwrap().push(guard.token());
                    tokio::task::yield_now().await;
                    inside.store(false, Ordering::SeqCst);
                    guard.release().await.expect("released");
                }
            }));
        }
    }
    for task in tasks {
        within("contending task", task).await.unwrap();
    }
    let tokens = fence.lock().unwrap().clone();
    assert_eq!(tokens.len(), 120);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens in grant order only grow: {tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_holder_past_its_ttl() {
    let nodes = cluster(3).await;
    let guard = within("acquire", nodes[0].lock("long").ttl(MAX_TTL).wait(PATIENT))
        .await
        .unwrap();
    // Four TTLs pass; the guard renews every third of one.
    let lost = guard.lost();
    let outlived = tokio::time::timeout(MAX_TTL * 4, lost).await.is_err();
    assert!(outlived, "the lease was lost while renewals could run");
    assert!(guard.is_held());
    let refused = expect_err(
        nodes[1].lock("long").ttl(MAX_TTL).await,
        "held by a renewer",
    );
    assert_eq!(refused.code(), Code::Conflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_and_leases_are_refused_with_bad_request() {
    let nodes = cluster(1).await;
    let e = expect_err(nodes[0].lock("").await, "empty key");
    assert_eq!(e.code(), Code::BadRequest);
    let e = expect_err(nodes[0].lock("x".repeat(2000)).await, "huge key");
    assert_eq!(e.code(), Code::BadRequest);
    let e = expect_err(
        nodes[0].lock("k").ttl(MAX_TTL * 2).await,
        "lease over the cluster's max",
    );
    assert_eq!(e.code(), Code::BadRequest);
    assert!(e.detail().contains("max_ttl"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_node_locks_but_holds_no_replica() {
    let ca = new_ca();
    let server = node_builder(&ca, "server")
        .lock_max_ttl(MAX_TTL)
        .start()
        .await
        .unwrap();
    let client = node_builder(&ca, "cli")
        .lock_max_ttl(MAX_TTL)
        .client_only()
        .seeds([server.addr().to_string()])
        .start()
        .await
        .unwrap();
    converge(&client, "the server", |r| r.members().len() == 2).await;
    let guard = within("acquire", client.lock("k").ttl(MAX_TTL).wait(PATIENT))
        .await
        .unwrap();
    let e = expect_err(
        server.lock("k").ttl(MAX_TTL).await,
        "held by the client node",
    );
    assert_eq!(e.code(), Code::Conflict);
    assert!(e.detail().contains("cli"), "{e}");
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resigned_leader_is_followed_and_observers_see_each_one() {
    let nodes = cluster(3).await;
    let mut watch = nodes[2].leader_of("scheduler");
    assert_eq!(watch.current(), None);
    let a = within("n0 elected", nodes[0].elect("scheduler").ttl(MAX_TTL))
        .await
        .unwrap();
    assert!(a.is_leader());
    let seen = within("observer sees n0", watch.changed()).await.unwrap();
    assert_eq!(seen.node, "n0");
    assert_eq!(seen.token, a.token());
    let b = tokio::spawn({
        let election = nodes[1].elect("scheduler").ttl(MAX_TTL);
        async move { election.await }
    });
    let first_token = a.token();
    within("resign", a.resign()).await.unwrap();
    let b = within("n1 elected", b).await.unwrap().unwrap();
    assert!(b.token() > first_token);
    let mut next = within("observer sees n1", watch.changed()).await;
    while next.as_ref().is_none_or(|l| l.node != "n1") {
        next = within("observer sees n1", watch.changed()).await;
    }
    assert_eq!(next.unwrap().token, b.token());
}
