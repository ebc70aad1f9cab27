//! A call through the node's client layers.

use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use super::Client;
use crate::context::Metadata;
use crate::error::{Code, Error};
use crate::layer::{BoxFuture, ClientCore, Next, Outgoing};

/// Runs the call once the layers let it through, with the metadata and deadline they leave,
/// and keeps the reply for the caller (layers see only the outcome).
struct Once<F, R> {
    run: Mutex<Option<F>>,
    reply: Mutex<Option<R>>,
}

impl<F, Fut, R> ClientCore for Once<F, R>
where
    F: FnOnce(Metadata, Instant) -> Fut + Send,
    Fut: Future<Output = Result<R, Error>> + Send,
    R: Send,
{
    fn call<'b>(&'b self, outgoing: &'b mut Outgoing) -> BoxFuture<'b, Result<(), Error>> {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner()).take();
        Box::pin(async move {
            let Some(run) = run else {
                return Err(Error::client(
                    Code::Internal,
                    "a client layer ran the rest of the chain twice",
                ));
            };
            let reply = run(outgoing.metadata.clone(), outgoing.deadline).await?;
            *self.reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(reply);
            Ok(())
        })
    }
}

/// Runs `call` inside the client's layers.
pub(super) async fn through_layers<F, Fut, R>(
    client: &Client,
    mut outgoing: Outgoing,
    call: F,
) -> Result<R, Error>
where
    F: FnOnce(Metadata, Instant) -> Fut + Send,
    Fut: Future<Output = Result<R, Error>> + Send,
    R: Send,
{
    let core = Once {
        run: Mutex::new(Some(call)),
        reply: Mutex::new(None),
    };
    let layers = client.caller.layers.client.clone();
    Next::new(&layers, &core).run(&mut outgoing).await?;
    let reply = core.reply.lock().unwrap_or_else(|e| e.into_inner()).take();
    reply.ok_or_else(|| {
        Error::client(
            Code::Internal,
            "a client layer returned Ok without running the call",
        )
    })
}
