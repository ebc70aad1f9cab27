//! What a user implements: [`Event`] for a type that is published, [`Subscriber`] for a service
//! state that receives it.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::ContentType;
use crate::context::Context;
use crate::error::Error;

/// A type that can be published to a subject.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Serialize, Deserialize)]
/// struct OrderPlaced { id: u64 }
/// impl colony::Event for OrderPlaced {}
/// ```
///
/// Events travel as bincode (or JSON, for subscribers that ask for it and for publishers
/// without Rust types), so the same serde rules as for [`Message`](crate::Message) apply.
/// `Clone` because one published value reaches every subscriber on its node without being
/// encoded: each gets its own copy.
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

/// Any JSON value: what the `colony subscribe` command receives, and a subscriber that wants
/// events of every shape.
impl Event for serde_json::Value {}

/// A service state's handling of one event type.
///
/// Each instance handles one event (or call) at a time, like a [`Handler`](crate::Handler).
/// `Ok` acknowledges the event; with an at-least-once subscription, `Err`, a panic or running
/// past the ack deadline has it redelivered (to another member of the queue group if there is
/// one) and, after the last attempt, published to the dead-letter subject.
pub trait Subscriber<E: Event>: Send + 'static {
    /// Handles `event`; [`Context::subject`] says where it was published,
    /// [`Context::attempt`] how many times it was tried.
    fn handle(&mut self, event: E, ctx: &Context)
        -> impl Future<Output = Result<(), Error>> + Send;
}

/// An at-least-once event whose every attempt failed, published to the subscription's
/// dead-letter subject (`colony.dead.<service>` unless set) as an [`Event`] of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where the event was published.
    pub subject: String,
    /// The subscribing service that could not handle it.
    pub service: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: String,
    /// How `body` is encoded.
    pub content_type: ContentType,
    /// The event as published.
    pub body: Vec<u8>,
}

impl Event for DeadLetter {}

impl DeadLetter {
    /// The event, decoded as `E`.
    pub fn event<E: Event>(&self) -> Result<E, Error> {
        self.content_type.decode(&self.body)
    }
}

/// A published value as the broker carries it: the value itself on the publisher's node (no
/// encoding), bytes once it has crossed the network.
#[derive(Clone)]
pub(crate) enum Payload {
    Local(Arc<dyn LocalEvent>),
    Encoded {
        content_type: ContentType,
        body: Bytes,
    },
}

/// An event value published on this node, whatever its type.
pub(crate) trait LocalEvent: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn encode(&self, content_type: ContentType) -> Result<Vec<u8>, Error>;
    fn encode_into(&self, content_type: ContentType, out: &mut BytesMut) -> Result<(), Error>;
}

impl<E: Event> LocalEvent for E {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn encode(&self, content_type: ContentType) -> Result<Vec<u8>, Error> {
        content_type.encode(self)
    }
    fn encode_into(&self, content_type: ContentType, out: &mut BytesMut) -> Result<(), Error> {
        content_type.encode_into(self, out)
    }
}

impl Payload {
    /// The payload's bytes in `content_type` (a copy of the bytes it holds if it already is).
    pub(crate) fn encode(&self, content_type: ContentType) -> Result<Bytes, Error> {
        match self {
            Payload::Local(value) => value.encode(content_type).map(Bytes::from),
            Payload::Encoded {
                content_type: ct,
                body,
            } if *ct == content_type => Ok(body.clone()),
            // Without the Rust type, bytes cannot change codec faithfully (bincode of a JSON
            // value is not bincode of the struct): such payloads travel as they came.
            Payload::Encoded {
                content_type: ct, ..
            } => Err(Error::internal(format!(
                "an event published as {ct} cannot be sent as {content_type}"
            ))),
        }
    }

    /// Appends the payload's bytes in `content_type` to `out`.
    pub(crate) fn encode_into(
        &self,
        content_type: ContentType,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        match self {
            Payload::Local(value) => value.encode_into(content_type, out),
            Payload::Encoded { .. } => {
                out.extend_from_slice(&self.encode(content_type)?);
                Ok(())
            }
        }
    }

    /// True for an event published as JSON (without Rust types): it travels as JSON.
    pub(crate) fn is_json(&self) -> bool {
        matches!(
            self,
            Payload::Encoded {
                content_type: ContentType::Json,
                ..
            }
        )
    }

    /// The payload as an `E`: a clone of the published value when it is one, else decoded.
    pub(crate) fn to_event<E: Event>(&self) -> Result<E, Error> {
        match self {
            Payload::Local(value) => match value.as_any().downcast_ref::<E>() {
                Some(event) => Ok(event.clone()),
                // Another Rust type of the same shape: through a codec, as a remote one would
                // (bincode first; JSON for self-describing targets such as `serde_json::Value`).
                None => ContentType::Bincode
                    .decode(&value.encode(ContentType::Bincode)?)
                    .or_else(|_| ContentType::Json.decode(&value.encode(ContentType::Json)?)),
            },
            Payload::Encoded { content_type, body } => content_type.decode(body),
        }
    }
}
