//! A three-node cluster in three OS processes: join, every service in every node's view, calls
//! by name, `kill -9` of one node, and its restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use colony::{Node, RegistryEvent};
use colony_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_colony-test-node");

async fn spawn(ca_dir: PathBuf, name: &str, seed: Option<SocketAddr>, service: &str) -> ChildNode {
    spawn_at(ca_dir, name, seed, service, None).await
}

async fn spawn_at(
    ca_dir: PathBuf,
    name: &str,
    seed: Option<SocketAddr>,
    service: &str,
    listen: Option<SocketAddr>,
) -> ChildNode {
    let mut extra = vec!["--service".to_string(), service.to_string()];
    if let Some(listen) = listen {
        extra.extend(["--listen".to_string(), listen.to_string()]);
    }
    if let Some(seed) = seed {
        extra.extend(["--seed".to_string(), seed.to_string()]);
    }
    ChildNode::start(EXE.as_ref(), &ca_dir, name, &extra).await
}

/// Polls the node at `addr` for its registry view until `ready` holds.
async fn wait_view(me: &Node, addr: SocketAddr, what: &str, ready: impl Fn(&NodeView) -> bool) {
    let poll = async {
        loop {
            let view = me
                .client()
                .request(INSPECT, Inspect {})
                .at(addr)
                .timeout(Duration::from_secs(2))
                .await;
            if matches!(&view, Ok(v) if ready(v)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(HANG_LIMIT, poll).await.is_err() {
        panic!("the node at {addr} never showed {what}");
    }
}

/// Reads `watch` until an event about instance `id` arrives, skipping others; returns its kind.
async fn next_about(watch: &mut colony::Watch, id: &str) -> &'static str {
    loop {
        match within("a watch event", watch.next()).await {
            Some(RegistryEvent::Created(i)) if i.id == id => return "created",
            Some(RegistryEvent::Updated(i)) if i.id == id => return "updated",
            Some(RegistryEvent::Deleted(i)) if i.id == id => return "deleted",
            Some(_) => {}
            None => panic!("the watch ended"),
        }
    }
}

fn fixture_ids(view: &NodeView) -> Vec<String> {
    view.services.get(FIXTURE).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_join_survive_a_kill_and_rejoin() {
    let ca = new_ca();
    let dir = write_ca_dir(&ca);
    let n1 = spawn(dir.path().into(), "n1", None, "svc-1").await;
    let n2 = spawn(dir.path().into(), "n2", Some(n1.addr()), "svc-2").await;
    let n3 = spawn(dir.path().into(), "n3", Some(n1.addr()), "svc-3").await;
    let me = node_builder(&ca, "observer")
        .seeds([n1.addr().to_string()])
        .client_only()
        .start()
        .await
        .unwrap();
    // Read in line below, each time while the state that produces the expected event holds, so
    // the watch's coalescing of missed changes cannot hide it.
    let mut watch = me.registry().watch();

    // Every node sees every service, and every member.
    let all_three = ["fixture@n1", "fixture@n2", "fixture@n3"];
    for node in [&n1, &n2, &n3] {
        wait_view(&me, node.addr(), "the whole cluster", |v| {
            fixture_ids(v) == all_three
                && ["svc-1", "svc-2", "svc-3"]
                    .iter()
                    .all(|s| v.services.get(*s).is_some_and(|i| i.len() == 1))
                && ["n1", "n2", "n3", "observer"]
                    .iter()
                    .all(|m| v.members.iter().any(|x| x == m))
        })
        .await;
    }
    converge(&me, "three fixtures", |r| r.instances(FIXTURE).len() == 3).await;
    assert_eq!(next_about(&mut watch, "fixture@n3").await, "created");
    // By name, from this process, to whichever node runs the service.
    for service in ["svc-1", "svc-2", "svc-3"] {
        let reply = me
            .client()
            .call(
                service,
                Echo {
                    text: service.into(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("call {service} by name: {e}"));
        assert!(reply.remote);
        assert_eq!(reply.service, service);
    }

    // kill -9 (the guard's drop kills with SIGKILL): no goodbye, only silence.
    drop(n3);
    for node in [&n1, &n2] {
        wait_view(&me, node.addr(), "n3 gone", |v| {
            fixture_ids(v) == ["fixture@n1", "fixture@n2"]
                && !v.services.contains_key("svc-3")
                && !v.members.iter().any(|m| m == "n3")
        })
        .await;
    }
    converge(&me, "n3's fixture gone", |r| {
        r.instances(FIXTURE).len() == 2
    })
    .await;
    assert_eq!(next_about(&mut watch, "fixture@n3").await, "deleted");
    for i in 0..6 {
        me.client()
            .call(
                FIXTURE,
                Echo {
                    text: format!("after kill {i}"),
                },
            )
            .await
            .expect("survivors answer calls by name");
    }
    let err = expect_err(
        me.client()
            .call(
                "svc-3",
                Echo {
                    text: "gone".into(),
                },
            )
            .await,
        "service of the dead node",
    );
    assert_eq!(err.code(), colony::Code::NotFound);

    // The same name comes back in a new process and is everywhere again.
    let n3 = spawn(dir.path().into(), "n3", Some(n1.addr()), "svc-3").await;
    for node in [&n1, &n2, &n3] {
        wait_view(&me, node.addr(), "n3 back", |v| {
            fixture_ids(v) == all_three && v.services.get("svc-3").is_some_and(|i| i.len() == 1)
        })
        .await;
    }
    converge(&me, "svc-3 back", |r| r.instances("svc-3").len() == 1).await;
    converge(&me, "n3's fixture back", |r| {
        r.instances(FIXTURE).len() == 3
    })
    .await;
    assert_eq!(next_about(&mut watch, "fixture@n3").await, "created");
    assert_eq!(me.registry().instances("svc-3")[0].addr, n3.addr());
    me.client()
        .call(
            "svc-3",
            Echo {
                text: "back".into(),
            },
        )
        .await
        .expect("restarted node answers");

    within("observer shutdown", me.shutdown()).await;
    // Changes not yet read are still handed out; then the watch ends with the node.
    within("the watch to end", async {
        while watch.next().await.is_some() {}
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_and_restarted_at_the_same_address_is_reachable_again() {
    let ca = new_ca();
    let dir = write_ca_dir(&ca);
    let n1 = spawn(dir.path().into(), "n1", None, "svc-1").await;
    let n2 = spawn(dir.path().into(), "n2", Some(n1.addr()), "svc-2").await;
    let fixed = n2.addr();
    let me = node_builder(&ca, "observer")
        .seeds([n1.addr().to_string()])
        .client_only()
        .start()
        .await
        .unwrap();
    converge(&me, "svc-2", |r| r.instances("svc-2").len() == 1).await;
    // A pooled connection to n2's first process.
    me.client()
        .call("svc-2", Echo { text: "1".into() })
        .await
        .unwrap();
    let first = me
        .members()
        .into_iter()
        .find(|m| m.name == "n2")
        .unwrap()
        .generation;

    // SIGKILL (no CONNECTION_CLOSE reaches us) and an immediate restart on the same port: the
    // new generation can show up before the failure detector declares the old one dead.
    drop(n2);
    let n2 = spawn_at(
        dir.path().into(),
        "n2",
        Some(n1.addr()),
        "svc-2",
        Some(fixed),
    )
    .await;
    assert_eq!(n2.addr(), fixed);
    converge(&me, "n2's new incarnation", |r| {
        r.members()
            .iter()
            .any(|m| m.name == "n2" && m.generation != first)
            && r.instances("svc-2").len() == 1
    })
    .await;
    // Calls reach the new process well before the dead connection's 30 s idle timeout.
    let client = me.client();
    let reached = async {
        loop {
            let call = client
                .request("svc-2", Echo { text: "2".into() })
                .timeout(Duration::from_millis(500));
            match call.await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    within(
        "a call to n2 after its restart at the same address",
        reached,
    )
    .await;
    within("observer shutdown", me.shutdown()).await;
}
