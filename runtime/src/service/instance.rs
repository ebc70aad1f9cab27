//! A service instance as a [`Behavior`]: the user's state plus the envelope protocol.

use std::time::Instant;

use colony_actors::{Behavior, Done};
use tokio::sync::oneshot;

use super::endpoints::{AnyBox, HandleFn};
use crate::context::Context;
use crate::error::{Code, Error, Origin};

/// One call in an instance's mailbox.
pub(crate) struct Envelope<S> {
    pub(crate) handle: HandleFn<S>,
    pub(crate) request: AnyBox,
    pub(crate) ctx: Context,
    pub(crate) reply: oneshot::Sender<Result<AnyBox, Error>>,
}

/// The state of one instance: whatever the user's factory made.
pub(crate) struct ServiceState<S>(pub(crate) S);

impl<S: Send + 'static> Behavior for ServiceState<S> {
    type Msg = Envelope<S>;

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
            let _ = reply.send(Err(Error::server(
                Code::Timeout,
                format!("deadline passed before {} ran", ctx.endpoint),
            )));
            return;
        }
        // If the handler panics, `reply` is dropped while unwinding and the caller is told
        // Internal (see `Pending`); the supervisor replaces this instance.
        let result = handle(&mut self.0, request, &ctx).await;
        // Free before the caller hears back: its next call may come here at once.
        drop(done);
        // A handler that forwards an error from a call of its own is still the handler answering.
        let _ = reply.send(result.map_err(|e| e.with_origin(Origin::Handler)));
    }
}
