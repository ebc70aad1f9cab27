//! Choosing where a call goes: version and label filters, sticky keys, strategies, and what the
//! selector learned. Three nodes in one process, each running `greeter` at another version.
//!
//! ```text
//! cargo run --release --example routing
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use colony::prelude::*;
use colony::Strategy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    name: String,
}

impl Message for Hello {
    type Reply = String;
    const ENDPOINT: &'static str = "Greeter.Hello";
}

/// Answers with the node it runs on; the one on node `slow` takes 5 ms per call.
struct Greeter {
    node: &'static str,
}

impl Handler<Hello> for Greeter {
    async fn handle(&mut self, _req: Hello, _ctx: &Context) -> Result<String, Error> {
        if self.node == "slow" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(self.node.to_string())
    }
}

/// Which node answered each of `n` calls made by `call`.
async fn spread<F, Fut>(n: usize, mut call: F) -> Result<BTreeMap<String, usize>, Error>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<String, Error>>,
{
    let mut seen = BTreeMap::new();
    for i in 0..n {
        *seen.entry(call(i).await?).or_default() += 1;
    }
    Ok(seen)
}

async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ca = std::sync::Arc::new(colony::ClusterCa::generate()?);
    let mut nodes = Vec::new();
    for (name, version, zone) in [
        ("eu-1", "1.2.0", "eu"),
        ("us-1", "1.4.1", "us"),
        ("slow", "2.0.0", "eu"),
    ] {
        let mut builder = Node::builder().name(name).ca(ca.clone());
        if let Some(seed) = nodes.first().map(|n: &Node| n.addr().to_string()) {
            builder = builder.seeds([seed]);
        }
        let node = builder.start().await?;
        node.service("greeter")
            .version(version)
            .metadata("zone", zone)
            .handler::<Hello>()
            .spawn(move || Greeter { node: name })
            .await?;
        nodes.push(node);
    }
    let caller = Node::builder()
        .name("caller")
        .ca(ca)
        .seeds([nodes[0].addr().to_string()])
        .client_only()
        .start()
        .await?;
    caller
        .registry()
        .wait_until(Duration::from_secs(10), |r| {
            r.instances("greeter").len() == 3
        })
        .await;
    let client = caller.client();
    let hello = || Hello { name: "Ann".into() };

    let by_default = spread(300, |_| client.call("greeter", hello())).await?;
    println!("default (power of two choices on latency): {by_default:?}");
    let rr = spread(300, |_| {
        client
            .request("greeter", hello())
            .strategy(Strategy::RoundRobin)
            .send()
    })
    .await?;
    println!("round-robin:                               {rr:?}");
    let v1 = spread(100, |_| {
        client.request("greeter", hello()).version("^1").send()
    })
    .await?;
    println!("version ^1:                                {v1:?}");
    let eu = spread(100, |_| {
        client
            .request("greeter", hello())
            .label("zone", "eu")
            .exclude_node("slow")
            .send()
    })
    .await?;
    println!("zone=eu, not on slow:                      {eu:?}");
    let sticky = spread(100, |_| {
        client.request("greeter", hello()).key("user-42").send()
    })
    .await?;
    println!("key user-42 (rendezvous hashing):          {sticky:?}");
    let users = spread(300, |i| {
        client
            .request("greeter", hello())
            .key(format!("user-{i}"))
            .send()
    })
    .await?;
    println!("300 different keys:                        {users:?}");
    let err = client
        .request("greeter", hello())
        .version("^3")
        .await
        .unwrap_err();
    println!("version ^3:                                {err}");

    println!("\nwhat the caller's selector learned:");
    for i in client.instance_report("greeter").await {
        println!(
            "  {:<14} {:<8} calls={:<4} latency={:>6}us",
            i.id,
            i.health,
            i.calls,
            i.latency_us.unwrap_or(0)
        );
    }
    caller.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    colony_examples::init_tracing("warn");
    tokio::spawn(demo()).await?
}
