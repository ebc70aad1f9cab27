//! The two kinds of request a call carries: typed (Rust callers) and JSON (tools, the CLI).

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;

use super::attempt::{Failure, Payload};
use super::selector::LocalHandle;
use crate::codec::ContentType;
use crate::context::Context;
use crate::error::{Code, Error, Origin};
use crate::message::Message;
use crate::service::{await_reply, call_encoded, deliver, downcast_reply, AnyBox, Pending};

/// A typed request. On this node it travels as a value, never encoded; for other nodes it is
/// encoded once and the bytes serve every attempt.
pub(crate) struct Typed<M> {
    request: Option<M>,
    /// Set for idempotent calls: each local attempt gets a copy, so a delivered request can
    /// still be sent again.
    copy: Option<fn(&M) -> M>,
    encoded: Option<Bytes>,
    content_type: ContentType,
}

impl<M: Message> Typed<M> {
    pub(crate) fn new(request: M, copy: Option<fn(&M) -> M>, content_type: ContentType) -> Self {
        Self {
            request: Some(request),
            copy,
            encoded: None,
            content_type,
        }
    }

    fn take(&mut self) -> Option<M> {
        match self.copy {
            Some(copy) => self.request.as_ref().map(copy),
            None => self.request.take(),
        }
    }
}

/// How a local attempt began.
enum Start {
    /// In an instance's mailbox.
    Sent(Pending),
    /// To go through the node's serve layers first. Boxed: the layered delivery's state would
    /// otherwise be carried, and copied with every move, by each local call's future.
    Layered(Pin<Box<dyn Future<Output = Result<AnyBox, Error>> + Send>>),
    /// Refused before delivery.
    Failed(Failure),
}

fn spent(endpoint: &str) -> Failure {
    Failure::delivered(Error::client(
        Code::Internal,
        format!("the {endpoint} request was delivered already and is not idempotent"),
    ))
}

impl<M: Message> Payload for Typed<M> {
    type Reply = M::Reply;

    fn endpoint(&self) -> &str {
        M::ENDPOINT
    }

    fn endpoint_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(M::ENDPOINT)
    }

    fn local(
        &mut self,
        (_, service): &LocalHandle,
        ctx: Context,
    ) -> impl Future<Output = Result<M::Reply, Failure>> + Send + 'static + use<M> {
        let deadline = ctx.deadline;
        let start = match self.take() {
            None => Start::Failed(spent(M::ENDPOINT)),
            Some(request) if !service.layers().is_empty() => {
                let service = service.clone();
                let request: AnyBox = Box::new(request);
                Start::Layered(Box::pin(async move {
                    deliver(service.as_ref(), M::ENDPOINT, request, ctx, Origin::Client).await
                }))
            }
            Some(request) => match service.dispatch(M::ENDPOINT, Box::new(request), ctx) {
                Ok(pending) => Start::Sent(pending),
                Err(refused) => {
                    // Never reached an instance: keep it for the next attempt.
                    if self.request.is_none() {
                        self.request = refused.request.downcast::<M>().ok().map(|m| *m);
                    }
                    Start::Failed(Failure::from_reply(refused.error))
                }
            },
        };
        async move {
            let reply = match start {
                // `Unavailable` from the server side here means the call never ran.
                Start::Sent(pending) => await_reply(pending, deadline, M::ENDPOINT, Origin::Client)
                    .await
                    .map_err(Failure::from_reply)?,
                Start::Layered(delivery) => delivery.await.map_err(Failure::from_reply)?,
                Start::Failed(failure) => return Err(failure),
            };
            downcast_reply(reply, M::ENDPOINT).map_err(Failure::delivered)
        }
    }

    fn encoded(&mut self) -> Result<(Bytes, ContentType), Error> {
        let ct = self.content_type;
        if let Some(bytes) = &self.encoded {
            return Ok((bytes.clone(), ct));
        }
        let request = self
            .request
            .as_ref()
            .ok_or_else(|| spent(M::ENDPOINT).error)?;
        let bytes = Bytes::from(
            ct.encode(request)
                .map_err(|e| Error::client(Code::BadRequest, e.detail()))?,
        );
        self.encoded = Some(bytes.clone());
        Ok((bytes, ct))
    }

    fn can_resend(&self) -> bool {
        self.request.is_some() || self.encoded.is_some()
    }

    fn decode(ct: ContentType, reply: &Bytes, from: SocketAddr) -> Result<M::Reply, Error> {
        ct.decode::<M::Reply>(reply).map_err(|e| {
            Error::client(
                Code::Internal,
                format!("undecodable reply from {from}: {}", e.detail()),
            )
        })
    }
}

/// A JSON request for any endpoint, without Rust types.
pub(crate) struct Json {
    pub(crate) endpoint: String,
    pub(crate) body: Bytes,
}

impl Payload for Json {
    type Reply = Bytes;

    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn endpoint_name(&self) -> Cow<'static, str> {
        Cow::Owned(self.endpoint.clone())
    }

    fn local(
        &mut self,
        (_, service): &LocalHandle,
        mut ctx: Context,
    ) -> impl Future<Output = Result<Bytes, Failure>> + Send + 'static + use<> {
        let service = service.clone();
        let body = self.body.clone();
        ctx.content_type = Some(ContentType::Json);
        // Decoded and encoded with the endpoint's own codec: it behaves like a remote JSON call.
        async move {
            call_encoded(
                service.as_ref(),
                ctx,
                ContentType::Json,
                &body,
                Origin::Client,
            )
            .await
            .map(Bytes::from)
            .map_err(Failure::from_reply)
        }
    }

    fn encoded(&mut self) -> Result<(Bytes, ContentType), Error> {
        Ok((self.body.clone(), ContentType::Json))
    }

    fn can_resend(&self) -> bool {
        true
    }

    fn decode(_: ContentType, reply: &Bytes, _: SocketAddr) -> Result<Bytes, Error> {
        Ok(reply.clone())
    }
}
