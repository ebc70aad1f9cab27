//! Pub/sub across three `colony-test-node` processes, published from this process's node: every
//! plain subscriber gets every event once, a queue group gets each once in all, and an
//! at-least-once queue group loses nothing when one member's process is `kill -9`ed mid-stream
//! (the publisher's outbox, here, redelivers to the members left).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use colony::{Context, DeadLetter, Error, Node, Subscriber};
use colony_tests::probe::{assert_exactly_once, publish_jobs, published};
use colony_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_colony-test-node");

/// The processes' node names; the first is the others' seed.
const NAMES: [&str; 3] = ["n1", "n2", "n3"];

/// Starts the three processes with `extra` arguments each and a node here, joined to them, that
/// sees `service` on all three.
async fn start(
    ca: &std::sync::Arc<colony::ClusterCa>,
    ca_dir: &Path,
    extra: &[String],
    service: &str,
) -> (Vec<ChildNode>, Node) {
    let first = ChildNode::start(EXE.as_ref(), ca_dir, NAMES[0], extra).await;
    let seed = first.addr();
    let mut nodes = vec![first];
    for name in &NAMES[1..] {
        let mut args = extra.to_vec();
        args.extend(["--seed".to_string(), seed.to_string()]);
        nodes.push(ChildNode::start(EXE.as_ref(), ca_dir, name, &args).await);
    }
    let me = node_builder(ca, "publisher")
        .seeds([seed.to_string()])
        .start()
        .await
        .expect("publisher node starts");
    converge(&me, &format!("{service} on the three processes"), |r| {
        r.instances(service).len() == 3
    })
    .await;
    (nodes, me)
}

fn subscribe_args(spec: &str) -> Vec<String> {
    vec!["--subscribe".to_string(), spec.to_string()]
}

/// What the `service` at `addr` has handled.
async fn received(me: &Node, service: &str, addr: SocketAddr) -> Vec<Handled> {
    me.client()
        .request(service, Received {})
        .at(addr)
        .timeout(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("ask {service} at {addr} what it received: {e}"))
}

/// Polls what each node's `service` handled until `done` holds for the lists; returns them.
async fn wait_received(
    me: &Node,
    service: &str,
    nodes: &[ChildNode],
    what: &str,
    done: impl Fn(&[Vec<Handled>]) -> bool,
) -> Vec<Vec<Handled>> {
    within(what, async {
        loop {
            let mut all = Vec::new();
            for node in nodes {
                all.push(received(me, service, node.addr()).await);
            }
            if done(&all) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_plain_subscriber_in_three_processes_gets_every_event_exactly_once() {
    const N: u64 = 300;
    let ca = new_ca();
    let dir = write_ca_dir(&ca);
    let (nodes, me) = start(&ca, dir.path(), &subscribe_args("audit:jobs.>"), "audit").await;
    publish_jobs(&me, "jobs.created", 0..N, published(3, 3)).await;
    within("flush", me.client().flush(HANG_LIMIT))
        .await
        .expect("flush");
    let all = wait_received(
        &me,
        "audit",
        &nodes,
        "every process to get every event",
        |all| all.iter().all(|h| h.len() >= N as usize),
    )
    .await;
    for (name, handled) in NAMES.iter().zip(&all) {
        let ids: Vec<u64> = handled.iter().map(|h| h.id).collect();
        assert_exactly_once(&ids, N, name);
        assert!(
            handled
                .iter()
                .all(|h| h.subject == "jobs.created" && h.attempt == 1),
            "{name}"
        );
    }
    within("publisher shutdown", me.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_across_three_processes_gets_each_event_once_in_all() {
    const N: u64 = 300;
    let ca = new_ca();
    let dir = write_ca_dir(&ca);
    let (nodes, me) = start(
        &ca,
        dir.path(),
        &subscribe_args("workers:jobs.>:workers"),
        "workers",
    )
    .await;
    publish_jobs(&me, "jobs.created", 0..N, published(1, 1)).await;
    within("flush", me.client().flush(HANG_LIMIT))
        .await
        .expect("flush");
    let all = wait_received(
        &me,
        "workers",
        &nodes,
        "the group to get every event",
        |all| all.iter().map(Vec::len).sum::<usize>() >= N as usize,
    )
    .await;
    let ids: Vec<u64> = all.iter().flatten().map(|h| h.id).collect();
    assert_exactly_once(&ids, N, "the queue group");
    let counts: Vec<usize> = all.iter().map(Vec::len).collect();
    assert!(
        counts.iter().all(|c| *c > 0),
        "every member gets some: {counts:?}"
    );
    within("publisher shutdown", me.shutdown()).await;
}

/// Dead letters published here.
#[derive(Debug, Clone, Default)]
struct Morgue(std::sync::Arc<std::sync::Mutex<Vec<DeadLetter>>>);

impl Subscriber<DeadLetter> for Morgue {
    async fn handle(&mut self, letter: DeadLetter, _ctx: &Context) -> Result<(), Error> {
        self.0.lock().unwrap().push(letter);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_least_once_queue_group_loses_nothing_when_a_member_is_killed_mid_stream() {
    const N: u64 = 300;
    let ca = new_ca();
    let dir = write_ca_dir(&ca);
    let records = TempDir::new("pubsub-records");
    let mut extra = subscribe_args("workers:jobs.>:workers:alo");
    extra.extend(
        [
            "--ack-wait-ms",
            "2000",
            // Slower than the publisher: each member has a backlog when one is killed.
            "--handle-delay-ms",
            "10",
            "--record-dir",
        ]
        .map(String::from),
    );
    extra.push(records.path().display().to_string());
    let (mut nodes, me) = start(&ca, dir.path(), &extra, "workers").await;
    let morgue = Morgue::default();
    let m = morgue.clone();
    me.service("morgue")
        .subscribe::<DeadLetter>("colony.dead.workers")
        .spawn(move || m.clone())
        .await
        .expect("dead-letter subscriber starts");
    let file = |name: &str| record_file(records.path(), name, "workers");

    let publish = |ids: std::ops::Range<u64>| {
        let client = me.client();
        async move {
            for id in ids {
                let published = client
                    .publish("jobs.created", Job { id })
                    .await
                    .unwrap_or_else(|e| panic!("publish {id}: {e}"));
                assert_eq!(published.subscriptions, 1);
            }
        }
    };
    publish(0..N / 2).await;
    // The victim is busy with its share when it dies.
    let victim = NAMES[2];
    wait_until(
        || read_records(&file(victim)).len() >= 5,
        "the victim to handle a few events",
    )
    .await;
    nodes[2].kill();
    let handled_by_victim = read_records(&file(victim));
    assert!(
        handled_by_victim.len() < (N / 2 / 3) as usize,
        "the victim still had a backlog when it died ({} handled)",
        handled_by_victim.len()
    );
    publish(N / 2..N).await;

    // Every delivery acknowledged: what the victim never acked went to the members left.
    // (Generous: the ack deadline, and the cluster noticing the death, come first.)
    me.client()
        .flush(Duration::from_secs(60))
        .await
        .expect("every at-least-once delivery acknowledged");
    assert_eq!(me.health().broker.unacknowledged, 0);
    assert!(
        morgue.0.lock().unwrap().is_empty(),
        "nothing dead-lettered: {:?}",
        morgue.0.lock().unwrap()
    );

    let mut handled = BTreeSet::new();
    let mut redelivered = Vec::new();
    for name in NAMES {
        let records = read_records(&file(name));
        if name != victim {
            assert!(!records.is_empty(), "{name} handled some");
            redelivered.extend(records.iter().copied().filter(|(_, attempt)| *attempt > 1));
        }
        handled.extend(records.into_iter().map(|(id, _)| id));
    }
    eprintln!(
        "the victim handled {} before its death; {} redeliveries handled by the others",
        handled_by_victim.len(),
        redelivered.len()
    );
    let missing: Vec<u64> = (0..N).filter(|id| !handled.contains(id)).collect();
    assert!(missing.is_empty(), "never handled: {missing:?}");
    assert!(
        !redelivered.is_empty(),
        "the victim's backlog was redelivered to the members left"
    );
    // The survivors answer too, and agree with their records.
    for (name, node) in NAMES.iter().zip(&nodes).take(2) {
        let got = received(&me, "workers", node.addr()).await;
        assert_eq!(got.len(), read_records(&file(name)).len(), "{name}");
    }
    within("publisher shutdown", me.shutdown()).await;
}
