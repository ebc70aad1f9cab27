//! Nodes in separate OS processes: this test process calls a `colony-test-node` child that trusts
//! the same CA through `--ca-dir`. Every child is killed by its guard, whatever happens.

use std::path::PathBuf;

use colony::{Code, Origin};
use colony_tests::*;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_colony-test-node"))
}

async fn spawn_child(ca_dir: PathBuf, name: &'static str) -> ChildNode {
    ChildNode::start(&exe(), &ca_dir, name, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_another_process_answers_calls() {
    let ca = new_ca();
    let ca_dir = write_ca_dir(&ca);
    let child = spawn_child(ca_dir.path().to_path_buf(), "child").await;
    assert_ne!(child.id(), std::process::id());
    let me = start_node(&ca, "parent").await;
    let client = me.client();
    let at = child.addr();

    let bin = within(
        "call to the child",
        client.call_at(at, FIXTURE, Echo { text: "hi".into() }),
    )
    .await
    .expect("bincode call to the child process");
    let json = within(
        "JSON call to the child",
        client
            .request(FIXTURE, Echo { text: "hi".into() })
            .at(at)
            .json()
            .metadata("X-Trace", "cross-process"),
    )
    .await
    .expect("JSON call to the child process");
    assert_eq!(bin.text, "hi");
    assert!(bin.remote);
    assert_eq!(bin.content_type.as_deref(), Some("application/bincode"));
    assert_eq!(json.text, "hi");
    assert_eq!(json.content_type.as_deref(), Some("application/json"));
    assert_eq!(json.trace.as_deref(), Some("cross-process"));

    // Errors cross the process boundary intact too.
    let err = expect_err(
        client
            .call_at(
                at,
                FIXTURE,
                Fail {
                    code: 418,
                    detail: "teapot".into(),
                },
            )
            .await,
        "failing call to the child",
    );
    assert_eq!(err.code(), Code::Other(418));
    assert_eq!(err.detail(), "teapot");
    assert_eq!(err.origin(), Origin::Handler);
    let err = expect_err(
        client
            .call_at(at, "nosuch", Echo { text: "x".into() })
            .await,
        "unknown service in the child",
    );
    assert_eq!((err.code(), err.origin()), (Code::NotFound, Origin::Server));

    // A panic in the child's handler is Internal, and the child keeps serving.
    let err = expect_err(
        client.call_at(at, FIXTURE, Panic {}).await,
        "panic in the child",
    );
    assert_eq!((err.code(), err.origin()), (Code::Internal, Origin::Server));
    let mut served = false;
    for _ in 0..100 {
        // Two instances: while the panicked one restarts, the other answers.
        if client.call_at(at, FIXTURE, Count {}).await.is_ok() {
            served = true;
            break;
        }
    }
    assert!(served, "the child serves after a handler panic");

    // Many calls at once over the one connection.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let client = me.client();
        tasks.spawn(async move {
            let text = format!("{i}");
            (
                text.clone(),
                client.call_at(at, FIXTURE, Echo { text }).await,
            )
        });
    }
    for (text, reply) in within("32 calls to the child", tasks.join_all()).await {
        assert_eq!(reply.expect("concurrent call to the child").text, text);
    }

    me.shutdown().await;
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_node_stops_cleanly_when_its_stdin_closes() {
    let ca = new_ca();
    let ca_dir = write_ca_dir(&ca);
    let mut child = spawn_child(ca_dir.path().to_path_buf(), "child").await;
    let me = start_node(&ca, "parent").await;
    let reply = me
        .client()
        .call_at(child.addr(), FIXTURE, Echo { text: "bye".into() })
        .await
        .unwrap();
    assert_eq!(reply.text, "bye");

    child.close_stdin();
    let status = child.wait_exit().await;
    assert!(status.success(), "child exited with {status}");
    drop(me);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_of_another_cluster_is_refused() {
    let ours = new_ca();
    let theirs = new_ca();
    let their_dir = write_ca_dir(&theirs);
    let stranger = spawn_child(their_dir.path().to_path_buf(), "stranger").await;
    let me = start_node(&ours, "parent").await;

    let err = expect_err(
        within(
            "call to a stranger",
            me.client()
                .call_at(stranger.addr(), FIXTURE, Echo { text: "hi".into() }),
        )
        .await,
        "call to a process of another cluster",
    );
    assert_eq!(err.code(), Code::Unauthorized, "{err}");
    assert_eq!(err.origin(), Origin::Client, "{err}");

    // With the stranger's CA, the same process answers.
    let friend = start_node(&theirs, "friend").await;
    let reply = friend
        .client()
        .call_at(stranger.addr(), FIXTURE, Echo { text: "hi".into() })
        .await
        .unwrap();
    assert_eq!(reply.text, "hi");

    drop(friend);
    drop(me);
}
