//! Middleware: a client layer that stamps a token and times every call, a serve layer that
//! refuses calls without the token. Two nodes in one process.
//!
//! ```text
//! cargo run --release --example layers
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use colony::layer::{BoxFuture, ClientLayer, Next, Outgoing, ServeLayer, ServeNext};
use colony::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    name: String,
}

impl Message for Hello {
    type Reply = String;
    const ENDPOINT: &'static str = "Greeter.Hello";
}

struct Greeter;

impl Handler<Hello> for Greeter {
    async fn handle(&mut self, req: Hello, ctx: &Context) -> Result<String, Error> {
        let team = ctx.metadata().get("team").unwrap_or("nobody");
        Ok(format!("Hello, {} (from team {team})!", req.name))
    }
}

/// Client side: adds the token and the team, and logs each call with its outcome and time.
struct Stamp {
    token: &'static str,
    calls: Arc<AtomicU64>,
}

impl ClientLayer for Stamp {
    fn call<'a>(
        &'a self,
        call: &'a mut Outgoing,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            call.metadata_mut().insert("authorization", self.token);
            call.metadata_mut().insert("team", "payments");
            let started = Instant::now();
            let outcome = next.run(call).await;
            self.calls.fetch_add(1, Ordering::Relaxed);
            println!(
                "  [client layer] {} {} -> {} in {:?}",
                call.service(),
                call.endpoint(),
                match &outcome {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                },
                started.elapsed()
            );
            outcome
        })
    }
}

/// Server side: only callers that present the expected token get through.
struct RequireToken(&'static str);

impl ServeLayer for RequireToken {
    fn serve<'a>(
        &'a self,
        call: &'a Context,
        next: ServeNext<'a>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if call.metadata().get("authorization") != Some(self.0) {
                return Err(Error::forbidden(format!(
                    "{} needs a valid authorization token",
                    call.endpoint()
                )));
            }
            next.run().await
        })
    }
}

async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ca = Arc::new(colony::ClusterCa::generate()?);
    let server = Node::builder()
        .name("server")
        .ca(ca.clone())
        .serve_layer(RequireToken("s3cret"))
        .start()
        .await?;
    server
        .service("greeter")
        .handler::<Hello>()
        .spawn(|| Greeter)
        .await?;

    let calls = Arc::new(AtomicU64::new(0));
    let trusted = Node::builder()
        .name("trusted")
        .ca(ca.clone())
        .seeds([server.addr().to_string()])
        .layer(Stamp {
            token: "s3cret",
            calls: calls.clone(),
        })
        .start()
        .await?;
    let stranger = Node::builder()
        .name("stranger")
        .ca(ca)
        .seeds([server.addr().to_string()])
        .start()
        .await?;

    println!("a caller whose layer adds the token:");
    let reply = trusted
        .client()
        .call_at(server.addr(), "greeter", Hello { name: "Ann".into() })
        .await?;
    println!("  reply: {reply}");

    println!("a caller without it:");
    let err = stranger
        .client()
        .call_at(server.addr(), "greeter", Hello { name: "Bob".into() })
        .await
        .unwrap_err();
    println!("  refused: {err} (origin {:?})", err.origin());
    println!(
        "calls seen by the client layer: {}",
        calls.load(Ordering::Relaxed)
    );

    stranger.shutdown().await;
    trusted.shutdown().await;
    server.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tokio::spawn(demo()).await?
}
