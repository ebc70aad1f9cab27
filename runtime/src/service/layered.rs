//! A served call through the node's serve layers.

use std::sync::Mutex;

use super::endpoints::AnyBox;
use super::local::{dispatch_and_wait, LocalService};
use crate::context::Context;
use crate::error::{Code, Error, Origin};
use crate::layer::{BoxFuture, ServeCore, ServeNext};

/// Delivers the request when the layers let it through, and keeps the reply (layers see only
/// the outcome).
struct Deliver<'s> {
    service: &'s dyn LocalService,
    endpoint: &'s str,
    waiter: Origin,
    request: Mutex<Option<(AnyBox, Context)>>,
    outcome: Mutex<Option<Result<AnyBox, Error>>>,
}

impl ServeCore for Deliver<'_> {
    fn serve(&self) -> BoxFuture<'_, Result<(), Error>> {
        let request = self
            .request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Box::pin(async move {
            let Some((request, ctx)) = request else {
                return Err(Error::server(
                    Code::Internal,
                    "a serve layer ran the rest of the chain twice",
                ));
            };
            let outcome =
                dispatch_and_wait(self.service, self.endpoint, request, ctx, self.waiter).await;
            let result = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
            *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
            result
        })
    }
}

pub(super) async fn serve(
    service: &dyn LocalService,
    endpoint: &str,
    request: AnyBox,
    ctx: Context,
    waiter: Origin,
) -> Result<AnyBox, Error> {
    let core = Deliver {
        service,
        endpoint,
        waiter,
        request: Mutex::new(Some((request, ctx.clone()))),
        outcome: Mutex::new(None),
    };
    let chained = ServeNext::new(service.layers(), &ctx, &core).run().await;
    let outcome = core
        .outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match (chained, outcome) {
        (Ok(()), Some(outcome)) => outcome,
        // Delivered: whatever a layer made of the outcome keeps its origin (the call ran, and
        // must not look like a refusal a caller may safely send elsewhere).
        (Err(e), Some(_)) => Err(e),
        // A layer's own refusal, before delivery.
        (Err(e), None) => Err(e.with_origin(Origin::Server)),
        (Ok(()), None) => Err(Error::server(
            Code::Internal,
            "a serve layer returned Ok without delivering the call",
        )),
    }
}
