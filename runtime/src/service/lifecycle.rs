//! Hooks an instance's state runs when it starts and when it stops.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Start and stop hooks of a service's state, run by each instance. Opt in with
/// [`ServiceBuilder::lifecycle`](super::ServiceBuilder::lifecycle); both hooks default to doing
/// nothing.
///
/// ```
/// use colony::{Error, Lifecycle};
///
/// struct Cache { warm: bool }
///
/// impl Lifecycle for Cache {
///     async fn started(&mut self) -> Result<(), Error> {
///         // Load what the instance needs before its first call; an error fails the start.
///         self.warm = true;
///         Ok(())
///     }
///     async fn stopping(&mut self) {
///         // Flush, close connections: the mailbox is drained by now.
///         self.warm = false;
///     }
/// }
/// ```
pub trait Lifecycle: Send + 'static {
    /// Runs in each new instance (first start and every restart) before it takes a call.
    ///
    /// An error fails the start: when the service is spawned, `spawn` returns it; on a restart it
    /// counts as one more failure of the instance (backoff and restart budget apply).
    fn started(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// Runs when an instance stops on purpose (the service stops, scales down, or the node shuts
    /// down), after the calls in its mailbox are answered. Not after a panic: that state is
    /// gone, and a fresh one is made for the restart.
    fn stopping(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// The monomorphised hooks of a `Lifecycle` state, kept as plain functions so the instance
/// type does not need `S: Lifecycle`.
pub(crate) struct Hooks<S> {
    pub(crate) started: for<'a> fn(&'a mut S) -> BoxFuture<'a, Result<(), Error>>,
    pub(crate) stopping: for<'a> fn(&'a mut S) -> BoxFuture<'a, ()>,
}

impl<S> Clone for Hooks<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Hooks<S> {}

impl<S: Lifecycle> Hooks<S> {
    pub(crate) fn of() -> Self {
        Self {
            started: |s| Box::pin(s.started()),
            stopping: |s| Box::pin(s.stopping()),
        }
    }
}
