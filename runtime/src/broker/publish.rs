//! `client.publish("orders.created", OrderPlaced { id: 7 }).await?`: the publisher's API.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::event::{Event, Payload};
use crate::call::Client;
use crate::codec::ContentType;
use crate::context::Metadata;
use crate::error::{Code, Error};

/// Where a publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Published {
    /// Nodes that got a copy (this one included when it has subscribers): one copy per node,
    /// however many of its subscriptions match.
    pub nodes: usize,
    /// Subscriptions the event was handed to: every plain one that matches, one member per
    /// queue group. 0 when nobody subscribes, which is not an error.
    pub subscriptions: usize,
}

/// A publish being set up; `.await` it to send. Made by [`Client::publish`].
#[must_use = "nothing is published until it is awaited"]
pub struct Publish<'c> {
    client: &'c Client,
    subject: &'c str,
    payload: Result<Payload, Error>,
    metadata: Metadata,
    timeout: Option<Duration>,
}

impl Publish<'_> {
    /// How long the publish may wait for room in subscribers' buffers (their overflow policy
    /// blocks) and on the links to their nodes. Default: the node's call timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Adds metadata that subscribers read in [`Context::metadata`](crate::Context::metadata).
    pub fn metadata(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    async fn send(self) -> Result<Published, Error> {
        let caller = &self.client.caller;
        let timeout = self.timeout.unwrap_or(caller.defaults.timeout);
        caller
            .broker
            .publish(self.subject, self.payload?, self.metadata, timeout)
            .await
    }
}

impl<'c> IntoFuture for Publish<'c> {
    type Output = Result<Published, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl Client {
    /// Publishes `event` to `subject` (`orders.created`: no wildcards) for every subscription
    /// whose pattern matches it, in the whole cluster.
    ///
    /// Subscribers on this node get the value itself (a clone each, no encoding); each other
    /// node with subscribers gets one copy, which it hands to its own. Resolves once every
    /// subscriber's buffer (or the link to its node) has taken the event: it may wait there,
    /// within its timeout, when a subscriber's overflow policy blocks. At-least-once
    /// subscriptions are acknowledged later; [`flush`](Self::flush) waits for that.
    pub fn publish<'c, E: Event>(&'c self, subject: &'c str, event: E) -> Publish<'c> {
        self.publishing(subject, Ok(Payload::Local(Arc::new(event))))
    }

    /// Publishes an event given as JSON (for tools and other languages: the `colony publish`
    /// command). Typed subscribers decode it from JSON; it must be valid JSON.
    pub fn publish_json<'c>(&'c self, subject: &'c str, json: impl Into<Vec<u8>>) -> Publish<'c> {
        let body = json.into();
        let payload = match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            Ok(_) => Ok(Payload::Encoded {
                content_type: ContentType::Json,
                body: Bytes::from(body),
            }),
            Err(e) => Err(Error::client(
                Code::BadRequest,
                format!("the event is not valid JSON: {e}"),
            )),
        };
        self.publishing(subject, payload)
    }

    fn publishing<'c>(&'c self, subject: &'c str, payload: Result<Payload, Error>) -> Publish<'c> {
        Publish {
            client: self,
            subject,
            payload,
            metadata: Metadata::default(),
            timeout: None,
        }
    }

    /// Waits until everything this node has published has left it, and every at-least-once
    /// delivery has been acknowledged or dead-lettered, or `timeout` passes (then `Timeout`,
    /// saying how many wait). For a publisher about to exit.
    pub async fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.caller.broker.flush(timeout).await
    }
}
