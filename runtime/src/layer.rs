//! Middleware: layers around the calls a node makes and the calls it serves.
//!
//! A [`ClientLayer`] wraps every call this node's clients make by name or address: it sees the
//! service, endpoint, metadata and deadline, may change the metadata or deadline, may refuse
//! the call, and sees the outcome. Layers run outermost first, in the order they were added;
//! the innermost step is colony's own (instance selection, attempts, retries, hedging), so a
//! layer sees one logical call however many attempts it took.
//!
//! A [`ServeLayer`] wraps every call this node's services answer, local or remote, before the
//! request reaches an instance's mailbox: it sees the call's [`Context`] (caller, metadata,
//! deadline) and may refuse it. An error a serve layer returns itself reaches the caller with
//! origin `Server`.
//!
//! Why not tower: tower's `Service` is generic over request and response types and asks for
//! `poll_ready`; colony's calls cross layers as typed values that layers never need to see
//! (logging, auth, metrics look at the envelope, not the body), so one small object-safe trait
//! per side does the job, and a node without layers skips them entirely (no boxing, no dynamic
//! dispatch on the call path).
//!
//! ```
//! use colony::layer::{BoxFuture, ClientLayer, Next, Outgoing};
//! use colony::Error;
//!
//! /// Stamps every outgoing call with the caller's team.
//! struct Team(&'static str);
//!
//! impl ClientLayer for Team {
//!     fn call<'a>(&'a self, call: &'a mut Outgoing, next: Next<'a>) -> BoxFuture<'a, Result<(), Error>> {
//!         Box::pin(async move {
//!             call.metadata_mut().insert("team", self.0);
//!             next.run(call).await
//!         })
//!     }
//! }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::context::{Context, Metadata};
use crate::error::Error;

/// A boxed, sendable future: what layer methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An outgoing call as a [`ClientLayer`] sees it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub(crate) service: String,
    pub(crate) endpoint: String,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Instant,
}

impl Outgoing {
    /// The service called.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The endpoint called.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    /// The call's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// The call's metadata, to add or change entries (trace ids, tokens...).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }
    /// When the call gives up, all attempts included.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// Moves the deadline (earlier or later).
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

/// Middleware around the calls this node makes.
pub trait ClientLayer: Send + Sync + 'static {
    /// Handles one call: do something, run the rest with `next.run(call)` (at most once), do
    /// something with its outcome. Returning an error without running `next` refuses the call.
    fn call<'a>(
        &'a self,
        call: &'a mut Outgoing,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// Middleware around the calls this node's services answer.
pub trait ServeLayer: Send + Sync + 'static {
    /// Handles one served call: inspect `call`, run the rest with `next.run()` (at most once).
    fn serve<'a>(
        &'a self,
        call: &'a Context,
        next: ServeNext<'a>,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// The innermost step of a client chain: the call itself.
pub(crate) trait ClientCore: Send + Sync {
    fn call<'b>(&'b self, call: &'b mut Outgoing) -> BoxFuture<'b, Result<(), Error>>;
}

/// The innermost step of a serve chain: delivery to an instance.
pub(crate) trait ServeCore: Send + Sync {
    fn serve(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// The rest of a client chain, after the current layer.
pub struct Next<'a> {
    layers: &'a [Arc<dyn ClientLayer>],
    core: &'a dyn ClientCore,
}

impl<'a> Next<'a> {
    pub(crate) fn new(layers: &'a [Arc<dyn ClientLayer>], core: &'a dyn ClientCore) -> Self {
        Self { layers, core }
    }

    /// Runs the remaining layers and the call.
    pub fn run<'b>(self, call: &'b mut Outgoing) -> BoxFuture<'b, Result<(), Error>>
    where
        'a: 'b,
    {
        match self.layers.split_first() {
            Some((layer, rest)) => layer.call(call, Next::new(rest, self.core)),
            None => self.core.call(call),
        }
    }
}

/// The rest of a serve chain, after the current layer.
pub struct ServeNext<'a> {
    layers: &'a [Arc<dyn ServeLayer>],
    ctx: &'a Context,
    core: &'a dyn ServeCore,
}

impl<'a> ServeNext<'a> {
    pub(crate) fn new(
        layers: &'a [Arc<dyn ServeLayer>],
        ctx: &'a Context,
        core: &'a dyn ServeCore,
    ) -> Self {
        Self { layers, ctx, core }
    }

    /// Runs the remaining layers and delivers the call to an instance.
    pub fn run(self) -> BoxFuture<'a, Result<(), Error>> {
        match self.layers.split_first() {
            Some((layer, rest)) => layer.serve(self.ctx, ServeNext::new(rest, self.ctx, self.core)),
            None => self.core.serve(),
        }
    }
}

/// A node's layers, both sides.
#[derive(Clone, Default)]
pub(crate) struct Layers {
    pub(crate) client: Arc<[Arc<dyn ClientLayer>]>,
    pub(crate) serve: Arc<[Arc<dyn ServeLayer>]>,
}
