//! What an instance actor runs: one message at a time against its own state.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};

/// The state and logic of one service instance.
///
/// The runtime implements this for typed services; the supervisor only needs to create, run and
/// replace instances, so it knows nothing about messages beyond this trait.
pub trait Behavior: Send + Sized + 'static {
    /// What the instance's mailbox carries.
    type Msg: ractor::Message;

    /// Handles one message. A panic here fails the instance; its supervisor decides what follows.
    ///
    /// Drop `done` once the work is finished and *before* answering whoever sent the message:
    /// the instance then counts as free when that sender's next message is routed, instead of
    /// looking busy until this call returns. It is dropped at the end of `handle` anyway.
    fn handle(&mut self, msg: Self::Msg, done: Done<'_>) -> impl Future<Output = ()> + Send;

    /// Runs once the state is made, before the instance takes a message. An error fails the
    /// start: the first start of a service then fails, a restart counts as one more failure
    /// (backoff and budget apply).
    fn started(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }

    /// Runs when the instance stops on purpose (service stop, scale-down, node shutdown), after
    /// its mailbox is drained. Not after a panic: that state is gone.
    fn stopping(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Marks the message at hand as handled when dropped (see [`Behavior::handle`]).
#[derive(Debug)]
#[must_use = "dropping it at once marks the message handled before the work is done"]
pub struct Done<'a>(pub(crate) &'a AtomicU32);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
