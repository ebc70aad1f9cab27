//! `colony publish` and `colony subscribe` as processes against a running node: what one
//! publishes the other prints (and `--count` ends it), a queue group of two subscribe processes
//! gets each event once in total, bad input is refused before joining, and `describe` shows a
//! service's subscriptions with their counters.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use colony::{ClusterCa, Context, Error, Event, Node, Subscriber};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use common::{colony, stderr, stdout, TempDir};

/// Only to stop a hang: every wait below ends on a condition.
const PATIENCE: Duration = Duration::from_secs(60);

/// A node with no service of its own, the cluster the CLI processes join.
async fn seed_node(ca_dir: &Path, name: &str) -> Node {
    let ca = Arc::new(ClusterCa::load_or_create(ca_dir).unwrap());
    Node::builder().name(name).ca(ca).start().await.unwrap()
}

/// A running `colony subscribe`: its stdout lines, parsed, arrive on `lines`.
struct SubscribeProcess {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<Value>,
    reader: JoinHandle<()>,
    stderr: JoinHandle<String>,
}

impl SubscribeProcess {
    fn start(seed: &Node, ca_dir: &Path, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_colony"))
            .args(["--seed", &seed.addr().to_string(), "subscribe"])
            .args(args)
            .arg("--ca-dir")
            .arg(ca_dir)
            .env_remove("COLONY_SEEDS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("colony subscribe runs");
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().expect("piped stdout");
        let reader = tokio::spawn(async move {
            let mut out = BufReader::new(out).lines();
            while let Ok(Some(line)) = out.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
                let _ = tx.send(value);
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        Self {
            child,
            lines,
            reader,
            stderr,
        }
    }

    /// The subscribing service's name, `cli-sub-<pid>`.
    fn service(&self) -> String {
        format!("cli-sub-{}", self.child.id().expect("running"))
    }

    /// Waits until `node` sees this process's subscription, so that a publish reaches it.
    async fn visible_to(&self, node: &Node) {
        let service = self.service();
        let seen = node
            .registry()
            .wait_until(PATIENCE, |r| {
                r.members().iter().any(|m| m.services.contains(&service))
            })
            .await;
        assert!(seen, "{service} never appeared in the cluster");
    }

    /// Asks it to stop, as `kill` does.
    fn terminate(&self) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Waits for it to exit: its status, every line it printed not yet taken, its stderr.
    async fn exit(mut self) -> (ExitStatus, Vec<Value>, String) {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("colony subscribe did not exit")
            .unwrap();
        self.reader.await.unwrap();
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            rest.push(line);
        }
        (status, rest, self.stderr.await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_prints_what_publish_sends_and_count_ends_it() {
    let dir = TempDir::new("pubsub");
    let a = seed_node(&dir.0, "a").await;
    let seed = a.addr().to_string();
    let sub = SubscribeProcess::start(&a, &dir.0, &["orders.*", "--count", "2"]);
    sub.visible_to(&a).await;

    // The CLI's subscription, on its client node, as describe shows it.
    let out = colony(
        &["--seed", &seed, "describe", &sub.service(), "--json"],
        &dir.0,
    )
    .await;
    assert!(out.status.success(), "describe: {}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("describe --json");
    let subs = json["subscriptions"].as_array().expect("subscriptions");
    assert_eq!(subs.len(), 1, "{json}");
    assert_eq!(subs[0]["pattern"], "orders.*");
    assert_eq!(subs[0]["queue"], Value::Null);
    assert_eq!(subs[0]["at_least_once"], false);
    assert!(
        subs[0]["node"].as_str().unwrap().starts_with("colony-cli-"),
        "{json}"
    );

    // Nobody subscribes to it: not an error.
    let out = colony(
        &["--seed", &seed, "publish", "payments.failed", "{}"],
        &dir.0,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "published to 0 node(s), 0 subscription(s)\n");

    let created = r#"{"id":1,"items":["tea"]}"#;
    let out = colony(
        &["--seed", &seed, "publish", "orders.created", created],
        &dir.0,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "published to 1 node(s), 1 subscription(s)\n");
    let out = colony(
        &[
            "--seed",
            &seed,
            "publish",
            "orders.shipped",
            r#"{"id":1}"#,
            "--json",
        ],
        &dir.0,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let published: Value = serde_json::from_slice(&out.stdout).expect("publish --json");
    assert_eq!(
        published,
        json!({"subject": "orders.shipped", "nodes": 1, "subscriptions": 1})
    );

    // Two events: --count 2 ends it, with exactly these lines on stdout.
    let (status, lines, err) = sub.exit().await;
    assert!(status.success(), "{status}: {err}");
    assert_eq!(
        lines,
        [
            json!({"subject": "orders.created", "event": {"id": 1, "items": ["tea"]}}),
            json!({"subject": "orders.shipped", "event": {"id": 1}}),
        ],
        "{err}"
    );
    assert!(err.contains("done after 2 event(s)"), "{err}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_of_two_subscribe_processes_gets_each_event_once() {
    let dir = TempDir::new("queue");
    let a = seed_node(&dir.0, "a").await;
    let args = ["jobs.>", "--queue", "workers", "--at-least-once"];
    let mut subs = [
        SubscribeProcess::start(&a, &dir.0, &args),
        SubscribeProcess::start(&a, &dir.0, &args),
    ];
    for sub in &subs {
        sub.visible_to(&a).await;
    }

    const EVENTS: u64 = 20;
    for n in 0..EVENTS {
        let published = a
            .client()
            .publish("jobs.run", json!({ "n": n }))
            .await
            .unwrap();
        assert_eq!(published.subscriptions, 1, "one member of the group");
    }
    // At-least-once: every event acknowledged by the process that printed it.
    a.client().flush(PATIENCE).await.expect("acknowledged");

    let mut got: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let seen = tokio::time::timeout(PATIENCE, async {
        while got.iter().map(Vec::len).sum::<usize>() < EVENTS as usize {
            let [first, second] = &mut subs;
            let (i, line) = tokio::select! {
                Some(line) = first.lines.recv() => (0, line),
                Some(line) = second.lines.recv() => (1, line),
            };
            assert_eq!(line["subject"], "jobs.run", "{line}");
            assert!(line.get("attempt").is_none(), "no redelivery: {line}");
            got[i].push(line["event"]["n"].as_u64().expect("n"));
        }
    })
    .await;
    assert!(seen.is_ok(), "events missing: {got:?}");

    // Stopped by SIGTERM: a graceful exit, and nothing more printed (no duplicate).
    for sub in &subs {
        sub.terminate();
    }
    for (i, sub) in subs.into_iter().enumerate() {
        let (status, rest, err) = sub.exit().await;
        assert!(status.success(), "{status}: {err}");
        assert!(rest.is_empty(), "printed after the last event: {rest:?}");
        assert!(err.contains("terminated after"), "{err}");
        assert!(!got[i].is_empty(), "the group is balanced: {got:?}");
    }
    let all: BTreeSet<u64> = got.iter().flatten().copied().collect();
    assert_eq!(all, (0..EVENTS).collect(), "{got:?}");
    assert_eq!(got[0].len() + got[1].len(), EVENTS as usize, "{got:?}");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subjects_patterns_and_json_are_refused_before_joining() {
    let dir = TempDir::new("bad");
    ClusterCa::load_or_create(&dir.0).unwrap();
    // A seed that never answers: the refusals come before any join.
    let silent_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent_socket.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["publish", "orders..created", "{}"], "invalid subject"),
        (&["publish", "orders.*", "{}"], "invalid subject"),
        (
            &["publish", "orders.created", r#"{"id":"#],
            "not valid JSON",
        ),
        (&["publish", "orders.created", "id=7"], "not valid JSON"),
        (&["subscribe", "orders.>.x"], "invalid subscription pattern"),
    ];
    for (args, why) in cases {
        let out = colony(&[&["--seed", &silent][..], args].concat(), &dir.0).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
    let out = colony(
        &["--seed", &silent, "publish", "orders..created", "{}"],
        &dir.0,
    )
    .await;
    assert!(
        stderr(&out).contains("publish failed: 400 BadRequest: invalid subject"),
        "{}",
        stderr(&out)
    );
    drop(silent_socket);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    id: u64,
}

impl Event for OrderPlaced {}

struct Billing;

impl Subscriber<OrderPlaced> for Billing {
    async fn handle(&mut self, _: OrderPlaced, _: &Context) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_subscriptions_and_their_counters() {
    let dir = TempDir::new("describe-subs");
    let a = seed_node(&dir.0, "a").await;
    let b = seed_node_joining(&dir.0, "b", &a).await;
    let billing = b
        .service("billing")
        .subscribe::<OrderPlaced>("orders.*")
        .queue("billing")
        .at_least_once()
        .subscribe::<OrderPlaced>("refunds.>")
        .spawn(|| Billing)
        .await
        .unwrap();
    let seen = a
        .registry()
        .wait_until(PATIENCE, |r| r.instances("billing").len() == 1)
        .await;
    assert!(seen, "billing never appeared");
    for id in 0..3 {
        let published = a
            .client()
            .publish("orders.created", OrderPlaced { id })
            .await
            .unwrap();
        assert_eq!(published.subscriptions, 1);
    }
    a.client().flush(PATIENCE).await.expect("acknowledged");
    let handled = |h: &colony::ServiceHealth| h.subscriptions.iter().map(|s| s.handled).sum();
    assert_eq!(billing.health().map_or(0, |h| handled(&h)), 3u64);

    let seed = a.addr().to_string();
    let out = colony(&["--seed", &seed, "describe", "billing"], &dir.0).await;
    assert!(out.status.success(), "describe: {}", stderr(&out));
    let text = stdout(&out);
    let row = |pattern: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with("b ") && l.contains(pattern))
            .unwrap_or_else(|| panic!("no {pattern} row: {text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert!(
        text.contains("PATTERN") && text.contains("GUARANTEE"),
        "{text}"
    );
    // NODE PATTERN QUEUE GUARANTEE BUFFERED IN-HANDLER RECEIVED HANDLED FAILED DROPPED
    assert_eq!(
        row("orders.*"),
        [
            "b",
            "orders.*",
            "billing",
            "at-least-once",
            "0/1024",
            "0",
            "3",
            "3",
            "0",
            "0"
        ],
        "{text}"
    );
    assert_eq!(
        row("refunds.>"),
        [
            "b",
            "refunds.>",
            "-",
            "at-most-once",
            "0/1024",
            "0",
            "0",
            "0",
            "0",
            "0"
        ],
        "{text}"
    );

    let out = colony(&["--seed", &seed, "describe", "billing", "--json"], &dir.0).await;
    let json: Value = serde_json::from_slice(&out.stdout).expect("describe --json");
    let advertised = &json["instances"][0]["subscriptions"];
    assert_eq!(
        advertised,
        &json!([
            {"pattern": "orders.*", "queue": "billing", "at_least_once": true},
            {"pattern": "refunds.>", "queue": null, "at_least_once": false},
        ]),
        "{json}"
    );
    let subs = json["subscriptions"].as_array().expect("subscriptions");
    assert_eq!(subs.len(), 2, "{json}");
    assert_eq!(subs[0]["node"], "b");
    assert_eq!(subs[0]["pattern"], "orders.*");
    assert_eq!(subs[0]["stats"]["received"], 3);
    assert_eq!(subs[0]["stats"]["handled"], 3);
    assert_eq!(subs[0]["stats"]["capacity"], 1024);
    assert_eq!(subs[1]["stats"]["handled"], 0);

    // The runtime refuses what the CLI cannot check before joining: a bad queue group.
    let out = colony(
        &["--seed", &seed, "subscribe", "orders.*", "--queue", "a b"],
        &dir.0,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cannot subscribe: 400 BadRequest") && err.contains("invalid queue group"),
        "{err}"
    );
    b.shutdown().await;
    a.shutdown().await;
}

/// A node that joins the cluster through `seed`.
async fn seed_node_joining(ca_dir: &Path, name: &str, seed: &Node) -> Node {
    let ca = Arc::new(ClusterCa::load_or_create(ca_dir).unwrap());
    Node::builder()
        .name(name)
        .ca(ca)
        .seeds([seed.addr().to_string()])
        .start()
        .await
        .unwrap()
}
