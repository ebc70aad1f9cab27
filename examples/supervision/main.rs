//! Supervision you can watch: instances restart with backoff, a service that keeps failing is
//! withdrawn and restarted after a cool-down while its neighbour keeps serving, a full mailbox
//! refuses at once, and shutdown drains what is queued. One node, a few seconds.
//!
//! ```text
//! cargo run --release --example supervision
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colony::prelude::*;
use colony::{Lifecycle, NodeHealth, Recovery, RestartPolicy, ServiceStatus};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

/// Does some work; `crash: true` makes the handler panic.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    crash: bool,
    millis: u64,
}

impl Message for Work {
    type Reply = u32;
    const ENDPOINT: &'static str = "Worker.Work";
}

/// Counts the calls this incarnation served; counts its stops in `stopped`.
struct Worker {
    served: u32,
    stopped: Arc<AtomicU32>,
}

impl Handler<Work> for Worker {
    async fn handle(&mut self, work: Work, _: &Context) -> Result<u32, Error> {
        assert!(!work.crash, "asked to crash");
        tokio::time::sleep(Duration::from_millis(work.millis)).await;
        self.served += 1;
        Ok(self.served)
    }
}

impl Lifecycle for Worker {
    async fn stopping(&mut self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

fn print_health(health: &NodeHealth) {
    println!("  node {} is {}", health.node, health.status.as_str());
    for s in &health.services {
        let restart = s
            .restart_in_ms
            .map_or(String::new(), |ms| format!(", restarts in {ms} ms"));
        println!(
            "    {:<8} {:<10} live {}/{}  restarts {}  escalations {}{restart}  last failure: {}",
            s.name,
            s.status.as_str(),
            s.live,
            s.instances,
            s.restarts,
            s.escalations,
            s.last_failure.as_deref().unwrap_or("-"),
        );
    }
}

async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The panics below are on purpose: one line each, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .unwrap_or("a panic");
        println!("   (an instance panicked: {what})");
    }));
    let ca = Arc::new(colony::ClusterCa::generate()?);
    let node = Node::builder().name("demo").ca(ca).start().await?;
    let stopped = Arc::new(AtomicU32::new(0));
    let spawn = |name: &'static str, policy: RestartPolicy, mailbox: usize| {
        let stopped = stopped.clone();
        node.service(name)
            .instances(2)
            .mailbox(mailbox)
            .restart_policy(policy)
            .recovery(Recovery::CoolDown {
                first: Duration::from_millis(500),
                max: Duration::from_secs(5),
            })
            .lifecycle()
            .handler::<Work>()
            .spawn(move || Worker {
                served: 0,
                stopped: stopped.clone(),
            })
    };
    let fragile = spawn(
        "fragile",
        RestartPolicy {
            max_restarts: 3,
            within: Duration::from_secs(60),
            ..RestartPolicy::default()
        },
        1024,
    )
    .await?;
    let steady = spawn("steady", RestartPolicy::default(), 4).await?;
    let client = node.client();
    let crash = Work {
        crash: true,
        millis: 0,
    };

    println!(
        "1. an instance panics: its caller gets Internal, the instance restarts after a backoff"
    );
    for n in 1..=3 {
        let err = client.call("fragile", crash.clone()).await.unwrap_err();
        colony_examples::wait_for("the restart", || {
            fragile.restarts() == n && fragile.live_instances() == 2
        })
        .await;
        println!(
            "   panic {n}: {} {:?}; restarts so far: {}",
            u16::from(err.code()),
            err.code(),
            fragile.restarts()
        );
    }

    println!("\n2. one panic past the budget (3 in 60 s): the service fails as a whole");
    let _ = client.call("fragile", crash.clone()).await;
    colony_examples::wait_for("the escalation", || {
        fragile
            .health()
            .is_some_and(|h| h.status == ServiceStatus::Failed)
    })
    .await;
    print_health(&node.health());
    let refused = client
        .call(
            "fragile",
            Work {
                crash: false,
                millis: 0,
            },
        )
        .await
        .unwrap_err();
    println!(
        "   a call to it now: {} {:?}",
        u16::from(refused.code()),
        refused.code()
    );
    let served = client
        .call(
            "steady",
            Work {
                crash: false,
                millis: 0,
            },
        )
        .await?;
    println!("   its neighbour still serves: call #{served} answered");

    println!("\n3. after the cool-down (500 ms) the node restarts it");
    let failed_at = Instant::now();
    colony_examples::wait_for("the cool-down restart", || {
        fragile
            .health()
            .is_some_and(|h| h.status == ServiceStatus::Running)
    })
    .await;
    println!("   back after {} ms", failed_at.elapsed().as_millis());
    print_health(&node.health());

    println!("\n4. a full mailbox refuses at once (2 instances x 4 calls, each call 200 ms)");
    let calls = spawn_calls(&client, 12, 200);
    let (mut ok, mut full) = (0, 0);
    for call in calls {
        match call.await? {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Code::Unavailable => full += 1,
            Err(e) => return Err(e.into()),
        }
    }
    println!("   {ok} answered, {full} refused with Unavailable (retryable on another node)");

    println!(
        "\n5. shutdown drains: queued calls are answered, then `stopping` runs in each instance"
    );
    let queued = spawn_calls(&client, 6, 50);
    colony_examples::wait_for("the calls to queue", || {
        steady.health().is_some_and(|h| h.queued == 6)
    })
    .await;
    let before = stopped.load(Ordering::SeqCst);
    node.shutdown().await;
    let answered = futures_ok(queued).await;
    println!(
        "   {answered} of 6 queued calls answered; stopping hooks run: {}",
        stopped.load(Ordering::SeqCst) - before
    );
    Ok(())
}

/// `n` concurrent calls to `steady`, each taking `millis` in the handler.
fn spawn_calls(client: &Client, n: usize, millis: u64) -> Vec<JoinHandle<Result<u32, Error>>> {
    (0..n)
        .map(|_| {
            let client = client.clone();
            let work = Work {
                crash: false,
                millis,
            };
            tokio::spawn(async move { client.call("steady", work).await })
        })
        .collect()
}

/// How many of the calls succeeded.
async fn futures_ok(calls: Vec<JoinHandle<Result<u32, Error>>>) -> usize {
    let mut ok = 0;
    for call in calls {
        if matches!(call.await, Ok(Ok(_))) {
            ok += 1;
        }
    }
    ok
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    colony_examples::init_tracing("error");
    tokio::spawn(demo()).await?
}
