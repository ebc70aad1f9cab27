//! A service instance as a [`Behavior`]: the user's state plus the envelope protocol.

use std::time::Instant;

use colony_actors::{Behavior, Done};
use tokio::sync::oneshot;

use super::endpoints::{AnyBox, HandleFn};
use super::lifecycle::Hooks;
use crate::context::Context;
use crate::error::{Code, Error, Origin};

/// One call in an instance's mailbox.
pub(crate) struct Envelope<S> {
    pub(crate) handle: HandleFn<S>,
    pub(crate) request: AnyBox,
    pub(crate) ctx: Context,
    pub(crate) reply: ReplyTo,
}

/// Where an instance answers one call. Dropped unanswered, it still tells the caller what
/// happened: a call that never ran (it sat in the mailbox of an instance that stopped or
/// panicked) gets `Unavailable` from the server, which a caller may safely send elsewhere; a
/// call whose handler was running (and panicked) gets `Internal`.
pub(crate) struct ReplyTo {
    tx: Option<oneshot::Sender<Result<AnyBox, Error>>>,
    running: bool,
    /// Nobody waits for a reply (an event: the request itself reports how it ended).
    detached: bool,
}

impl ReplyTo {
    pub(crate) fn new(tx: oneshot::Sender<Result<AnyBox, Error>>) -> Self {
        Self {
            tx: Some(tx),
            running: false,
            detached: false,
        }
    }

    /// For an event: no reply is sent, and the handler runs all the same.
    pub(crate) fn detached() -> Self {
        Self {
            tx: None,
            running: false,
            detached: true,
        }
    }

    fn is_closed(&self) -> bool {
        !self.detached && self.tx.as_ref().is_none_or(|tx| tx.is_closed())
    }

    fn send(mut self, result: Result<AnyBox, Error>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(result);
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        let error = if self.running {
            Error::server(
                Code::Internal,
                "the instance failed while handling the call",
            )
        } else {
            Error::server(
                Code::Unavailable,
                "the instance stopped before the call ran",
            )
        };
        let _ = tx.send(Err(error));
    }
}

/// The state of one instance: whatever the user's factory made, and its hooks if it has any.
pub(crate) struct ServiceState<S>(pub(crate) S, pub(crate) Option<Hooks<S>>);

impl<S: Send + 'static> Behavior for ServiceState<S> {
    type Msg = Envelope<S>;

    async fn started(&mut self) -> Result<(), String> {
        match self.1 {
            Some(hooks) => (hooks.started)(&mut self.0)
                .await
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    async fn stopping(&mut self) {
        if let Some(hooks) = self.1 {
            (hooks.stopping)(&mut self.0).await;
        }
    }

    async fn handle(&mut self, envelope: Envelope<S>, done: Done<'_>) {
        let Envelope {
            handle,
            request,
            ctx,
            reply,
        } = envelope;
        // Work nobody waits for is not done: the caller gave up or its deadline passed while
        // the call sat in the mailbox.
        if reply.is_closed() {
            return;
        }
        if Instant::now() >= ctx.deadline {
            drop(done);
            reply.send(Err(Error::server(
                Code::Timeout,
                format!("deadline passed before {} ran", ctx.endpoint),
            )));
            return;
        }
        let mut reply = reply;
        reply.running = true;
        // If the handler panics, `reply` is dropped while unwinding and tells the caller
        // Internal; the supervisor replaces this instance.
        let result = handle(&mut self.0, request, &ctx).await;
        // Free before the caller hears back: its next call may come here at once.
        drop(done);
        // A handler that forwards an error from a call of its own is still the handler answering.
        reply.send(result.map_err(|e| e.with_origin(Origin::Handler)));
    }
}
