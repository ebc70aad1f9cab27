//! The `colony` command against a running cluster: services, members, describe, call, health
//! and its exit codes, and the messages for a seed that does not answer and for missing
//! credentials.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use colony::{
    ClusterCa, Context, Error, Handler, Message, Node, Recovery, RestartPolicy, ServiceStatus,
};
use serde::{Deserialize, Serialize};

use common::{colony, stderr, stdout, TempDir};

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct HelloReply {
    greeting: String,
}

impl Message for Hello {
    type Reply = HelloReply;
    const ENDPOINT: &'static str = "Greeter.Hello";
}

struct Greeter;

impl Handler<Hello> for Greeter {
    async fn handle(&mut self, req: Hello, _ctx: &Context) -> Result<HelloReply, Error> {
        if req.name.is_empty() {
            return Err(Error::bad_request("name is empty"));
        }
        Ok(HelloReply {
            greeting: format!("Hello, {}!", req.name),
        })
    }
}

/// Makes the `fragile` service's handler panic.
#[derive(Debug, Serialize, Deserialize)]
struct Boom {}

impl Message for Boom {
    type Reply = ();
    const ENDPOINT: &'static str = "Fragile.Boom";
}

/// A service that fails on its first call and has no restart to spare.
struct Fragile;

impl Handler<Boom> for Fragile {
    async fn handle(&mut self, _req: Boom, _ctx: &Context) -> Result<(), Error> {
        panic!("fragile asked to fail");
    }
}

async fn cluster(ca_dir: &Path) -> (Node, Node) {
    let ca = Arc::new(ClusterCa::load_or_create(ca_dir).unwrap());
    let a = Node::builder()
        .name("a")
        .ca(ca.clone())
        .start()
        .await
        .unwrap();
    let b = Node::builder()
        .name("b")
        .ca(ca)
        .seeds([a.addr().to_string()])
        .start()
        .await
        .unwrap();
    b.service("greeter")
        .version("2.1.0")
        .metadata("team", "core")
        .handler::<Hello>()
        .spawn(|| Greeter)
        .await
        .unwrap();
    let seen = a
        .registry()
        .wait_until(Duration::from_secs(20), |r| {
            r.instances("greeter").len() == 1
        })
        .await;
    assert!(seen, "the cluster did not form");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_members_describe_and_call_against_a_running_cluster() {
    let dir = TempDir::new("ok");
    let (a, b) = cluster(&dir.0).await;
    let seed = a.addr().to_string();

    let out = colony(&["--seed", &seed, "services"], &dir.0).await;
    assert!(out.status.success(), "services failed: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("SERVICE"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("greeter"))
        .expect("greeter row");
    assert!(row.contains("2.1.0") && row.contains('b'), "{row}");

    let out = colony(&["--seed", &seed, "services", "--json"], &dir.0).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services --json");
    assert_eq!(json["greeter"][0]["id"], "greeter@b");
    assert_eq!(json["greeter"][0]["metadata"]["team"], "core");

    let out = colony(&["--seed", &seed, "members", "--json"], &dir.0).await;
    let members: serde_json::Value = serde_json::from_slice(&out.stdout).expect("members --json");
    let names: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"a") && names.contains(&"b"), "{names:?}");
    let cli = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str().unwrap().starts_with("colony-cli"))
        .expect("the CLI joins as a member");
    assert_eq!(cli["role"], "client");

    // Node a calls greeter (on b) by name: its selector then has a view to show.
    for _ in 0..5 {
        let hello = Hello { name: "Ann".into() };
        a.client().call("greeter", hello).await.unwrap();
    }
    let out = colony(&["--seed", &seed, "describe", "greeter"], &dir.0).await;
    assert!(out.status.success(), "describe failed: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Greeter.Hello"), "{text}");
    let caller_row = text
        .lines()
        .find(|l| l.starts_with("a ") && l.contains("greeter@b"))
        .unwrap_or_else(|| panic!("no row for caller a: {text}"));
    assert!(caller_row.contains("healthy"), "{caller_row}");
    // The service's health on the node that runs it.
    let health_row = text
        .lines()
        .find(|l| l.starts_with("b ") && l.contains("running"))
        .unwrap_or_else(|| panic!("no health row for node b: {text}"));
    assert!(health_row.contains("1/1"), "{health_row}");

    let out = colony(&["--seed", &seed, "describe", "greeter", "--json"], &dir.0).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("describe --json");
    assert_eq!(json["instances"][0]["id"], "greeter@b");
    let callers = json["callers"].as_array().expect("callers");
    assert_eq!(callers.len(), 1, "only a has called greeter: {callers:?}");
    assert_eq!(callers[0]["node"], "a");
    let row = &callers[0]["instances"][0];
    assert_eq!(row["id"], "greeter@b");
    assert_eq!(row["calls"], 5);
    assert_eq!(row["failures"], 0);
    assert_eq!(row["health"], "healthy");
    let health = json["health"].as_array().expect("health");
    assert_eq!(health.len(), 1, "greeter runs on b only: {health:?}");
    assert_eq!(health[0]["node"], "b");
    assert_eq!(health[0]["health"]["status"], "running");
    assert_eq!(health[0]["health"]["live"], 1);

    let out = colony(
        &[
            "--seed",
            &seed,
            "call",
            "greeter",
            "Greeter.Hello",
            r#"{"name":"John"}"#,
        ],
        &dir.0,
    )
    .await;
    assert!(out.status.success(), "call failed: {}", stderr(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
    assert_eq!(reply["greeting"], "Hello, John!");

    // The handler's refusal reaches the terminal with its code, and a non-zero exit.
    let out = colony(
        &[
            "--seed",
            &seed,
            "call",
            "greeter",
            "Greeter.Hello",
            r#"{"name":""}"#,
        ],
        &dir.0,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("400 BadRequest"), "{}", stderr(&out));
    let out = colony(
        &["--seed", &seed, "call", "greeter", "Greeter.Nope", "{}"],
        &dir.0,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("404 NotFound"), "{}", stderr(&out));
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_messages_for_a_silent_seed_and_for_missing_credentials() {
    let dir = TempDir::new("errors");
    ClusterCa::load_or_create(&dir.0).unwrap();
    // A port that never answers: bound (so nothing else can take it) for the whole test, never
    // read.
    let silent_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent_socket.local_addr().unwrap();
    let out = colony(
        &["--seed", &silent.to_string(), "--wait", "1", "services"],
        &dir.0,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no seed answered"),
        "{}",
        stderr(&out)
    );

    let empty = TempDir::new("empty");
    let out = colony(&["--seed", &silent.to_string(), "services"], &empty.0).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no usable cluster credentials"),
        "{}",
        stderr(&out)
    );
    assert!(
        !empty.0.join(colony_quic::CA_FILE).exists(),
        "the CLI must not create a CA"
    );

    let out = colony(&["services"], &dir.0).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no seed: pass --seed"),
        "{}",
        stderr(&out)
    );
    drop(silent_socket);
}

/// A node named `name` running `greeter`, trusting the CA in `ca_dir`.
async fn greeter_node(ca_dir: &Path, name: &str) -> Node {
    let ca = Arc::new(ClusterCa::load_or_create(ca_dir).unwrap());
    let node = Node::builder().name(name).ca(ca).start().await.unwrap();
    node.service("greeter")
        .version("2.1.0")
        .handler::<Hello>()
        .spawn(|| Greeter)
        .await
        .unwrap();
    node
}

/// The `--json` output of `colony health`: one answer per node asked.
fn health_json(out: &Output) -> Vec<serde_json::Value> {
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("health --json is not JSON ({e}): {}", stdout(out)));
    json.as_array().expect("an array of answers").clone()
}

/// The health of `service` in one node's answer.
fn service<'a>(answer: &'a serde_json::Value, service: &str) -> &'a serde_json::Value {
    let services = answer["services"].as_array().expect("services");
    services
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("no {service} in {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_for_a_healthy_node_by_address_and_through_a_seed() {
    let dir = TempDir::new("healthy");
    let a = greeter_node(&dir.0, "a").await;
    let addr = a.addr().to_string();

    // The node asked is the seed.
    let out = colony(&["health", "--node", &addr], &dir.0).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "health --node: {}",
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.starts_with("NODE"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("a ") && l.contains("greeter"))
        .unwrap_or_else(|| panic!("no row for greeter on a: {text}"));
    assert!(
        row.contains("healthy") && row.contains("running") && row.contains(&addr),
        "{row}"
    );
    assert!(
        !text.contains("colony.node"),
        "colony's own service is left out: {text}"
    );

    // Every server member, found through the seed, as JSON.
    let out = colony(&["--seed", &addr, "health", "--json"], &dir.0).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "--seed health: {}",
        stderr(&out)
    );
    let answers = health_json(&out);
    assert_eq!(answers.len(), 1, "only a serves: {answers:?}");
    let answer = &answers[0];
    assert_eq!(answer["addr"], addr.as_str());
    assert_eq!(answer["node"], "a");
    assert_eq!(answer["status"], "healthy");
    assert!(answer.get("error").is_none(), "{answer}");
    let services: Vec<&str> = answer["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["greeter"], "{answer}");
    assert_eq!(service(answer, "greeter")["status"], "running");
    assert_eq!(service(answer, "greeter")["live"], 1);

    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_1_when_a_service_failed_past_its_restart_budget() {
    let dir = TempDir::new("failed");
    let a = greeter_node(&dir.0, "a").await;
    let fragile = a
        .service("fragile")
        .restart_policy(RestartPolicy {
            max_restarts: 0,
            ..RestartPolicy::default()
        })
        .recovery(Recovery::Manual)
        .handler::<Boom>()
        .spawn(|| Fragile)
        .await
        .unwrap();
    let addr = a.addr().to_string();
    let out = colony(&["health", "--node", &addr], &dir.0).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "before the failure: {}",
        stdout(&out)
    );

    // One panic, no restart allowed: the service is failed until restarted by hand.
    let err = a.client().call("fragile", Boom {}).await.unwrap_err();
    assert_eq!(err.code(), colony::Code::Internal, "{err}");
    let polled = tokio::time::timeout(Duration::from_secs(20), async {
        while fragile.health().map(|h| h.status) != Some(ServiceStatus::Failed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "fragile never failed: {:?}",
        fragile.health()
    );

    let out = colony(&["health", "--node", &addr], &dir.0).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "health with a failed service: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.contains("fragile"))
        .unwrap_or_else(|| panic!("no row for fragile: {text}"));
    assert!(row.contains("degraded") && row.contains("failed"), "{row}");
    assert!(
        row.contains("panicked") || row.contains("fragile asked to fail"),
        "{row}"
    );

    let out = colony(&["--seed", &addr, "health", "--json"], &dir.0).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let answers = health_json(&out);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["status"], "degraded");
    assert_eq!(service(&answers[0], "greeter")["status"], "running");
    let failed = service(&answers[0], "fragile");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["live"], 0);
    assert_eq!(failed["escalations"], 1, "{failed}");
    assert!(
        failed["last_failure"]
            .as_str()
            .is_some_and(|f| f.contains("fragile asked to fail")),
        "{failed}"
    );
    assert!(
        failed["restart_in_ms"].is_null(),
        "Recovery::Manual: no restart planned: {failed}"
    );

    // Restarted by hand: healthy again.
    fragile.restart().await.expect("manual restart");
    let out = colony(&["health", "--node", &addr], &dir.0).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "after the restart: {}",
        stdout(&out)
    );

    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_2_when_a_node_asked_cannot_be_reached() {
    let dir = TempDir::new("unreachable");
    let a = greeter_node(&dir.0, "a").await;
    let live = a.addr().to_string();
    // A port nothing listens on: bound for a moment to get it, then freed.
    let dead = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().to_string()
    };

    // The only node asked is the only seed: the cluster cannot be reached at all.
    let out = colony(&["health", "--node", &dead, "--wait", "1"], &dir.0).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no seed answered"),
        "{}",
        stderr(&out)
    );

    // The cluster answers, one of the nodes asked does not.
    let out = colony(
        &[
            "--seed", &live, "health", "--node", &live, "--node", &dead, "--wait", "1", "--json",
        ],
        &dir.0,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let answers = health_json(&out);
    assert_eq!(answers.len(), 2, "{answers:?}");
    let by_addr = |addr: &str| {
        answers
            .iter()
            .find(|a| a["addr"] == addr)
            .unwrap_or_else(|| panic!("no answer for {addr}: {answers:?}"))
    };
    assert_eq!(by_addr(&live)["status"], "healthy");
    let silent = by_addr(&dead);
    assert!(silent.get("status").is_none(), "{silent}");
    assert!(silent["error"].is_string(), "{silent}");

    a.shutdown().await;
}
