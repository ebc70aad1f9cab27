//! A service's endpoint table: from an endpoint name to the typed handler behind it.
//!
//! Requests cross the actor mailbox as `Box<dyn Any>`, so a local call never encodes. Each
//! entry keeps the monomorphised functions that know the real types: one to run the handler,
//! and a [`WireCodec`] to turn bytes into the request and the reply into bytes for remote calls.

use std::any::{Any, TypeId};
use std::future::Future;
use std::pin::Pin;

use crate::codec::ContentType;
use crate::context::Context;
use crate::error::Error;
use crate::message::{Handler, Message};

/// A request or reply whose type only the endpoint knows.
pub(crate) type AnyBox = Box<dyn Any + Send>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs the typed handler of one endpoint against an instance's state.
pub(crate) type HandleFn<S> =
    for<'a> fn(&'a mut S, AnyBox, &'a Context) -> BoxFuture<'a, Result<AnyBox, Error>>;

/// Turns bytes into the endpoint's request type and its reply back into bytes.
#[derive(Clone, Copy)]
pub(crate) struct WireCodec {
    pub(crate) decode_request: fn(ContentType, &[u8]) -> Result<AnyBox, Error>,
    pub(crate) encode_reply: fn(ContentType, &AnyBox) -> Result<Vec<u8>, Error>,
}

pub(crate) struct Route<S> {
    pub(crate) name: &'static str,
    /// The request type registered: in-process calls, which skip decoding, are routed by it.
    pub(crate) request_type: TypeId,
    pub(crate) handle: HandleFn<S>,
    pub(crate) codec: WireCodec,
}

fn handle_erased<'a, S: Handler<M>, M: Message>(
    state: &'a mut S,
    req: AnyBox,
    ctx: &'a Context,
) -> BoxFuture<'a, Result<AnyBox, Error>> {
    Box::pin(async move {
        // The dispatcher checked the type against `Route::request_type`.
        let Ok(req) = req.downcast::<M>() else {
            return Err(Error::internal(format!(
                "wrong request type for {}",
                M::ENDPOINT
            )));
        };
        let reply = state.handle(*req, ctx).await?;
        Ok(Box::new(reply) as AnyBox)
    })
}

fn decode_request<M: Message>(ct: ContentType, bytes: &[u8]) -> Result<AnyBox, Error> {
    Ok(Box::new(ct.decode::<M>(bytes)?))
}

fn encode_reply<M: Message>(ct: ContentType, reply: &AnyBox) -> Result<Vec<u8>, Error> {
    let reply = reply
        .downcast_ref::<M::Reply>()
        .ok_or_else(|| Error::internal(format!("wrong reply type from {}", M::ENDPOINT)))?;
    ct.encode(reply)
}

/// The endpoints one service type answers.
///
/// A plain vector scanned on lookup: services have a handful of endpoints, and comparing type
/// ids (in-process calls) or short names (remote calls) beats hashing on the call path.
pub(crate) struct Endpoints<S> {
    routes: Vec<Route<S>>,
}

impl<S> Default for Endpoints<S> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<S: Send + 'static> Endpoints<S> {
    /// Registers `M`; a second message type with the same endpoint name replaces the first.
    pub(crate) fn add<M: Message>(&mut self)
    where
        S: Handler<M>,
    {
        self.routes.retain(|r| r.name != M::ENDPOINT);
        self.routes.push(Route {
            name: M::ENDPOINT,
            request_type: TypeId::of::<M>(),
            handle: handle_erased::<S, M>,
            codec: WireCodec {
                decode_request: decode_request::<M>,
                encode_reply: encode_reply::<M>,
            },
        });
    }

    /// The route of an endpoint name.
    pub(crate) fn get(&self, endpoint: &str) -> Option<&Route<S>> {
        self.routes.iter().find(|r| r.name == endpoint)
    }

    /// The route of a request type.
    pub(crate) fn by_type(&self, request_type: TypeId) -> Option<&Route<S>> {
        self.routes.iter().find(|r| r.request_type == request_type)
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.routes.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names
    }
}
