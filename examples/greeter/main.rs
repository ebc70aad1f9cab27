//! Two nodes in one process: a greeter service on node `a`, called in-process from `a` and over
//! mutually-authenticated QUIC from node `b`, with bincode and with JSON, plus the errors a
//! caller sees for an unknown endpoint, a handler's refusal and a missed deadline.
//!
//! ```text
//! cargo run --release --example greeter
//! ```
//!
//! Trust comes from the per-user cluster CA in `~/.colony` (or `$COLONY_HOME`), created on the
//! first run: nodes started by the same user trust each other with no configuration.

use std::time::Duration;

use colony::prelude::*;
use serde::{Deserialize, Serialize};

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

/// A request the greeter does not answer, to show the error for an unknown endpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Goodbye {
    name: String,
}

impl Message for Goodbye {
    type Reply = String;
    const ENDPOINT: &'static str = "Greeter.Goodbye";
}

/// Takes longer than the caller is willing to wait.
#[derive(Debug, Serialize, Deserialize)]
struct Ponder {
    millis: u64,
}

impl Message for Ponder {
    type Reply = ();
    const ENDPOINT: &'static str = "Greeter.Ponder";
}

/// Each instance counts the greetings it gave, to show that instances are separate actors.
struct Greeter {
    greeted: u64,
}

impl Handler<Hello> for Greeter {
    async fn handle(&mut self, req: Hello, ctx: &Context) -> Result<HelloReply, Error> {
        if req.name.trim().is_empty() {
            return Err(Error::bad_request("name must not be empty"));
        }
        self.greeted += 1;
        let via = match ctx.content_type() {
            None => "in-process".to_string(),
            Some(ct) => format!(
                "{ct} from {}",
                ctx.peer().map_or("?".into(), |p| p.to_string())
            ),
        };
        Ok(HelloReply {
            greeting: format!(
                "Hello, {}! (greeting #{} of this instance, {via})",
                req.name, self.greeted
            ),
        })
    }
}

impl Handler<Ponder> for Greeter {
    async fn handle(&mut self, req: Ponder, _ctx: &Context) -> Result<(), Error> {
        tokio::time::sleep(Duration::from_millis(req.millis)).await;
        Ok(())
    }
}

fn hello(name: &str) -> Hello {
    Hello { name: name.into() }
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let a = Node::builder().name("a").start().await?;
    let b = Node::builder().name("b").start().await?;
    println!("node a listens on {}, node b on {}", a.addr(), b.addr());

    let greeter = a
        .service("greeter")
        .version("1.0.0")
        .instances(4)
        .handler::<Hello>()
        .handler::<Ponder>()
        .spawn(|| Greeter { greeted: 0 })
        .await?;
    println!(
        "service {} v{} runs {} instances, endpoints {:?}\n",
        greeter.name(),
        greeter.version().unwrap_or_default(),
        greeter.live_instances(),
        greeter.endpoints()
    );

    let local = a.client().call("greeter", hello("John")).await?;
    println!("a -> a (mailbox):      {}", local.greeting);

    let remote = b
        .client()
        .call_at(a.addr(), "greeter", hello("Jane"))
        .await?;
    println!("b -> a (QUIC bincode): {}", remote.greeting);

    let json = b
        .client()
        .request("greeter", hello("Ada"))
        .at(a.addr())
        .json()
        .await?;
    println!("b -> a (QUIC JSON):    {}\n", json.greeting);

    let unknown = b
        .client()
        .call_at(
            a.addr(),
            "greeter",
            Goodbye {
                name: "John".into(),
            },
        )
        .await;
    report("unknown endpoint", unknown);
    let refused = b.client().call_at(a.addr(), "greeter", hello(" ")).await;
    report("handler refuses", refused);
    let late = b
        .client()
        .request("greeter", Ponder { millis: 500 })
        .at(a.addr())
        .timeout(Duration::from_millis(100))
        .await;
    report("deadline 100 ms", late);

    b.shutdown().await;
    a.shutdown().await;
    println!("\nboth nodes shut down cleanly");
    Ok(())
}

fn report<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    match result {
        Ok(v) => println!("{what:<18} unexpectedly succeeded: {v:?}"),
        Err(e) => println!(
            "{what:<18} -> error {} {:?} from {:?}: {}",
            u16::from(e.code()),
            e.code(),
            e.origin(),
            e.detail()
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    colony_examples::init_tracing("warn");
    // The demo's calls run on a worker thread, as every hot path should.
    tokio::spawn(run()).await?
}
