//! `colony lock` and `colony leader` against a cluster started in the test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use colony::{ClusterCa, Node};
use common::{colony, stderr, stdout, TempDir};

const MAX_TTL: Duration = Duration::from_millis(800);

async fn node(ca: &Arc<ClusterCa>, name: &str, seed: Option<&Node>) -> Node {
    let mut builder = Node::builder()
        .name(name)
        .listen("127.0.0.1:0")
        .ca(ca.clone())
        .lock_max_ttl(MAX_TTL);
    if let Some(seed) = seed {
        builder = builder.seeds([seed.addr().to_string()]);
    }
    builder.start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_runs_the_command_with_a_token_and_refuses_while_held() {
    let dir = TempDir::new("lock");
    let ca = Arc::new(ClusterCa::load_or_create(&dir.0).unwrap());
    let a = node(&ca, "a", None).await;
    let b = node(&ca, "b", Some(&a)).await;
    // Wait out the start-up quarantine in the test, with a lock of its own.
    let warm = b
        .lock("job")
        .ttl(MAX_TTL)
        .wait(Duration::from_secs(20))
        .await
        .unwrap();
    let seed = a.addr().to_string();
    let args = [
        "--seed",
        &seed,
        "lock",
        "job",
        "--ttl",
        "800ms",
        "--acquire",
        "0",
    ];
    let held = colony(&[&args[..], &["--", "true"]].concat(), &dir.0).await;
    assert_eq!(held.status.code(), Some(1), "{}", stderr(&held));
    assert!(stderr(&held).contains("409 Conflict"), "{}", stderr(&held));
    assert!(
        stderr(&held).contains("held by node b"),
        "{}",
        stderr(&held)
    );
    let before = warm.token();
    warm.release().await.unwrap();

    let script = "echo \"$COLONY_LOCK_KEY $COLONY_LOCK_TOKEN\"; exit 3";
    let ran = colony(&[&args[..], &["--", "sh", "-c", script]].concat(), &dir.0).await;
    assert_eq!(
        ran.status.code(),
        Some(3),
        "the command's exit code: {}",
        stderr(&ran)
    );
    let printed = stdout(&ran);
    let mut words = printed.split_whitespace();
    assert_eq!(words.next(), Some("job"));
    let token: u64 = words.next().unwrap().parse().unwrap();
    assert!(token > before, "{token} > {before}");
    // Released when the command ended.
    let after = a
        .lock("job")
        .ttl(MAX_TTL)
        .wait(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(after.token() > token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_refuses_bad_input_before_running_anything() {
    let dir = TempDir::new("lock-bad");
    let ca = Arc::new(ClusterCa::load_or_create(&dir.0).unwrap());
    let a = node(&ca, "a", None).await;
    let seed = a.addr().to_string();
    let out = colony(
        &["--seed", &seed, "lock", "job", "--ttl", "ten", "--", "true"],
        &dir.0,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap's usage error: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
    // A lease the cluster does not grant: refused by its replica, with the code.
    let out = colony(
        &[
            "--seed",
            &seed,
            "lock",
            "job",
            "--ttl",
            "1m",
            "--acquire",
            "0",
            "--",
            "true",
        ],
        &dir.0,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The replica's own refusal, as it sent it (not a retry that ends in Unavailable).
    assert!(
        stderr(&out).contains("lock failed: 400 BadRequest"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_shows_the_elected_node() {
    let dir = TempDir::new("leader");
    let ca = Arc::new(ClusterCa::load_or_create(&dir.0).unwrap());
    let a = node(&ca, "a", None).await;
    let seed = a.addr().to_string();
    let none = colony(&["--seed", &seed, "leader", "scheduler"], &dir.0).await;
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stdout(&none).contains("scheduler: no leader"),
        "{}",
        stdout(&none)
    );
    let leadership =
        tokio::time::timeout(Duration::from_secs(30), a.elect("scheduler").ttl(MAX_TTL))
            .await
            .expect("elected in time")
            .unwrap();
    let shown = colony(&["--seed", &seed, "--json", "leader", "scheduler"], &dir.0).await;
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let json: serde_json::Value = serde_json::from_str(stdout(&shown).trim()).unwrap();
    assert_eq!(json["node"], "a");
    assert_eq!(json["token"], leadership.token());
}
