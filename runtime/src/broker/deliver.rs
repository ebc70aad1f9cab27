//! The broker's main paths: a publish resolved and sent, an event received from a link.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use colony_quic::RecvStream;

use super::event::Payload;
use super::frame::{self, EventHeader, Frame, FrameReader, WireTarget};
use super::link::{Outgoing, TrySend};
use super::outbox::{Sent, Tracked};
use super::resolve::Target;
use super::subscription::{AckTo, Delivery, LocalSubscription, PushError};
use super::{Broker, Published};
use crate::codec::ContentType;
use crate::context::Metadata;
use crate::error::{Code, Error, Origin};

/// One node's copy of an event: which of its subscriptions it is for, in which codec.
struct Copy {
    addr: SocketAddr,
    targets: Vec<WireTarget>,
    json: bool,
}

impl Broker {
    /// Sends `payload` to every subscription `subject` reaches; see [`Client::publish`].
    ///
    /// [`Client::publish`]: crate::Client::publish
    pub(crate) async fn publish(
        &self,
        subject: &str,
        payload: Payload,
        metadata: Metadata,
        timeout: Duration,
    ) -> Result<Published, Error> {
        let route = self
            .routes
            .get(
                subject,
                &self.registry,
                &self.services.subscriptions,
                &self.node,
            )
            .map_err(|e| {
                Error::client(
                    Code::BadRequest,
                    format!("invalid subject {subject:?}: {e}"),
                )
            })?;
        if route.is_empty() {
            return Ok(Published::default());
        }
        let deadline = Instant::now() + timeout;
        let targets = match route.single(&self.rotation) {
            Some(Target::Remote(sub)) if sub.redelivery.is_none() => {
                return self
                    .publish_to_one(sub, &route.subject, &payload, &metadata, deadline)
                    .await;
            }
            Some(one) => vec![one],
            None => route.targets(&self.rotation),
        };
        // Delivery ids first (the frames carry them); tracked only once every frame is built,
        // so a publish that fails here leaves nothing behind.
        let mut local = Vec::new();
        let mut copies: Vec<Copy> = Vec::new();
        let mut reliable = Vec::new();
        for target in &targets {
            let ack = target.at_least_once().then(|| {
                let id = self.next_delivery.fetch_add(1, Ordering::Relaxed);
                reliable.push((id, target));
                (id, 1)
            });
            match target {
                Target::Local(sub) => local.push((sub.clone(), ack)),
                Target::Remote(sub) => {
                    let copy = match copies.iter_mut().position(|c| c.addr == sub.addr) {
                        Some(i) => &mut copies[i],
                        None => {
                            copies.push(Copy {
                                addr: sub.addr,
                                targets: Vec::new(),
                                json: payload.is_json(),
                            });
                            copies.last_mut().expect("just pushed")
                        }
                    };
                    copy.json |= sub.json;
                    copy.targets.push(WireTarget { sub: sub.id, ack });
                }
            }
        }
        let frames = self.frames(route.subject.as_str(), &payload, &metadata, &copies)?;
        if !reliable.is_empty() {
            self.outbox.room(reliable.len(), deadline).await?;
            for (id, target) in reliable {
                self.track(id, &route.subject, &payload, &metadata, target);
            }
        }
        let published = Published {
            nodes: copies.len() + usize::from(!local.is_empty()),
            subscriptions: targets.len(),
        };
        drop(targets);
        if !local.is_empty() {
            let subject: Arc<str> = route.subject.as_str().into();
            for (sub, ack) in local {
                let delivery = Delivery {
                    subject: subject.clone(),
                    payload: payload.clone(),
                    metadata: metadata.clone(),
                    from: None,
                    ack: ack.map(|(id, attempt)| AckTo {
                        id,
                        attempt,
                        origin: None,
                    }),
                };
                match sub.try_push(delivery) {
                    Ok(()) => {}
                    Err(PushError::Gone(d)) => self.gone(d),
                    Err(PushError::Full(d)) => {
                        self.push_local(&sub, d, Some(deadline)).await?;
                    }
                }
            }
        }
        for (copy, framed) in copies.iter().zip(frames) {
            if let Err(e) = self.send_frame(copy.addr, framed, deadline).await {
                // Tracked but never sent: fail those attempts now, so they are retried after
                // their backoff rather than at their ack deadline.
                for (id, attempt) in copy.targets.iter().filter_map(|t| t.ack) {
                    let to = AckTo {
                        id,
                        attempt,
                        origin: None,
                    };
                    self.answer(to, Err(e.detail().to_string()));
                }
                return Err(e);
            }
        }
        Ok(published)
    }

    /// The common case on its own path: one at-most-once subscription on another node (or one
    /// queue group's pick), with no list of targets, copies or frames to build.
    async fn publish_to_one(
        &self,
        sub: &super::routes::RemoteSubscription,
        subject: &colony_actors::broker::Subject,
        payload: &Payload,
        metadata: &Metadata,
        deadline: Instant,
    ) -> Result<Published, Error> {
        let target = [WireTarget {
            sub: sub.id,
            ack: None,
        }];
        let framed =
            self.event_frame(subject.as_str(), payload, metadata, &target, sub.json, None)?;
        self.send_frame(sub.addr, framed, deadline).await?;
        Ok(Published {
            nodes: 1,
            subscriptions: 1,
        })
    }

    /// One frame per copy. A single copy gets the event encoded straight into its frame; more
    /// share one encoding per codec.
    fn frames(
        &self,
        subject: &str,
        payload: &Payload,
        metadata: &Metadata,
        copies: &[Copy],
    ) -> Result<Vec<Bytes>, Error> {
        let mut bodies: [Option<Bytes>; 2] = [None, None];
        let mut frames = Vec::with_capacity(copies.len());
        for copy in copies {
            let body = if copies.len() == 1 {
                None
            } else {
                let slot = &mut bodies[usize::from(copy.json)];
                if slot.is_none() {
                    let mut body = BytesMut::new();
                    payload
                        .encode_into(codec(copy.json), &mut body)
                        .map_err(bad_event)?;
                    self.check_size(body.len())?;
                    *slot = Some(body.freeze());
                }
                slot.as_ref()
            };
            frames.push(self.event_frame(
                subject,
                payload,
                metadata,
                &copy.targets,
                copy.json,
                body,
            )?);
        }
        Ok(frames)
    }

    /// The frame of one event for `targets` on one node: JSON if the node wants it or the event
    /// is JSON already; the body given, or encoded straight into the frame. Acknowledgements,
    /// if any target wants them, come back to this node.
    pub(super) fn event_frame(
        &self,
        subject: &str,
        payload: &Payload,
        metadata: &Metadata,
        targets: &[WireTarget],
        wants_json: bool,
        body: Option<&Bytes>,
    ) -> Result<Bytes, Error> {
        let content_type = codec(wants_json || payload.is_json());
        let header = EventHeader {
            subject,
            content_type,
            targets: Cow::Borrowed(targets),
            reply_to: targets.iter().any(|t| t.ack.is_some()).then_some(self.addr),
            metadata: Cow::Borrowed(metadata),
        };
        let mut framed = frame::begin_event(&header, body.map_or(128, Bytes::len))?;
        match body {
            Some(body) => framed.put_slice(body),
            None => {
                payload
                    .encode_into(content_type, &mut framed)
                    .map_err(bad_event)?;
                self.check_size(frame::body_len(&framed))?;
            }
        }
        Ok(frame::finish(framed))
    }

    fn check_size(&self, len: usize) -> Result<(), Error> {
        if len > self.max_event {
            return Err(Error::client(
                Code::TooLarge,
                format!(
                    "event of {len} bytes exceeds the {} byte limit for events sent to other nodes",
                    self.max_event
                ),
            ));
        }
        Ok(())
    }

    /// Queues a frame on the link to `addr`, waiting for room until `deadline`.
    pub(super) async fn send_frame(
        &self,
        addr: SocketAddr,
        framed: Bytes,
        deadline: Instant,
    ) -> Result<(), Error> {
        let link = self.link(addr);
        let closed = || {
            Err(Error::client(
                Code::Unavailable,
                format!("the link to {addr} closed (node shutting down)"),
            ))
        };
        let out = match link.try_send(Outgoing::Event(framed)) {
            Ok(()) => return Ok(()),
            Err(TrySend::Closed) => return closed(),
            Err(TrySend::Full(out)) => out,
        };
        match tokio::time::timeout_at(deadline.into(), link.send(out)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => closed(),
            Err(_) => Err(Error::client(
                Code::Timeout,
                format!("subscribers on {addr} did not take the event before the deadline: their buffers are full"),
            )),
        }
    }

    /// Starts tracking at-least-once delivery `id` (attempt 1).
    fn track(
        &self,
        id: u64,
        subject: &colony_actors::broker::Subject,
        payload: &Payload,
        metadata: &Metadata,
        target: &Target<'_>,
    ) {
        let (policy, group, node, service, pattern, dead_letter, sent) = match target {
            Target::Local(sub) => (
                sub.terms.redelivery,
                sub.terms.queue.clone(),
                self.node.as_str().into(),
                sub.service.clone(),
                sub.terms.pattern.as_str().into(),
                sub.terms.dead_letter.clone(),
                Sent::Local { id: sub.id },
            ),
            Target::Remote(sub) => (
                sub.redelivery,
                sub.queue.clone(),
                sub.node.clone(),
                sub.service.clone(),
                sub.pattern.clone(),
                sub.dead_letter.clone(),
                Sent::Remote {
                    addr: sub.addr,
                    id: sub.id,
                },
            ),
        };
        self.outbox.track(
            id,
            Tracked {
                subject: subject.clone(),
                payload: payload.clone(),
                metadata: metadata.clone(),
                policy: policy.unwrap_or_default(),
                group,
                node,
                service,
                pattern,
                dead_letter,
                sent,
                last_error: String::new(),
            },
        );
    }

    /// Queues a delivery in a subscription on this node; a subscription that is gone or stays
    /// full fails an at-least-once attempt (retried) and loses an at-most-once event.
    pub(super) async fn push_local(
        &self,
        sub: &LocalSubscription,
        delivery: Delivery,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        match sub.push(delivery, deadline).await {
            Ok(()) => Ok(()),
            Err(PushError::Gone(d)) => {
                self.gone(d);
                Ok(())
            }
            Err(PushError::Full(d)) => {
                if let Some(ack) = d.ack {
                    self.answer(ack, Err("the subscriber's buffer stayed full".into()));
                }
                Err(Error::new(
                    Code::Timeout,
                    format!(
                        "subscriber {} ({}) did not take the event before the deadline: its buffer is full",
                        sub.service,
                        sub.terms.pattern.as_str()
                    ),
                )
                .with_origin(Origin::Client))
            }
        }
    }

    /// Reads a link from `from` until it ends: events go to the subscriptions they name, acks
    /// to the outbox. A frame that does not decode is counted and skipped; the link goes on.
    pub(crate) async fn serve_link(self: Arc<Self>, mut recv: RecvStream, from: SocketAddr) {
        let mut reader = FrameReader::new(self.max_event + frame::HEADER_ROOM);
        loop {
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return,
                next = reader.next(&mut recv) => next,
            };
            let frame = match next {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(node = %self.node, peer = %from, error = %e, "broker link ended");
                    return;
                }
            };
            match frame::decode(&frame) {
                Ok(Frame::Event(header, body)) => {
                    // A full blocking buffer holds the link until it has room (or the
                    // subscription ends): the publisher was told the event was sent, so it is
                    // not dropped here. The publisher is slowed instead: its link's queue
                    // fills, then its publishes wait and time out.
                    for (sub, delivery) in self.receive(header, body, from) {
                        let _ = self.push_local(&sub, delivery, None).await;
                    }
                }
                Ok(Frame::Acks(acks)) => {
                    for ack in acks {
                        let outcome = ack.error.map_or(Ok(()), Err);
                        if let Some(due) = self.outbox.answered(ack.id, ack.attempt, outcome) {
                            self.act(due);
                        }
                    }
                }
                Err(e) => {
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %self.node, peer = %from, error = %e.detail(), "dropped a malformed broker frame");
                }
            }
        }
    }

    /// One event from another node, for the subscriptions it names.
    ///
    /// Queues each delivery at once where there is room, with no future per frame: what finds
    /// a full blocking buffer is handed back for the link to wait on.
    fn receive(
        &self,
        header: EventHeader<'_>,
        body: Bytes,
        from: SocketAddr,
    ) -> Vec<(Arc<LocalSubscription>, Delivery)> {
        let mut blocked = Vec::new();
        let subject: Arc<str> = header.subject.into();
        let payload = Payload::Encoded {
            content_type: header.content_type,
            body,
        };
        let origin = header.reply_to.unwrap_or(from);
        for target in header.targets.iter() {
            let ack = target.ack.map(|(id, attempt)| AckTo {
                id,
                attempt,
                origin: Some(origin),
            });
            let Some(sub) = self.services.subscriptions.get(target.sub) else {
                match ack {
                    Some(ack) => self.answer(
                        ack,
                        Err("no such subscription on this node (it ended)".into()),
                    ),
                    None => {
                        self.counters.unrouted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            };
            let delivery = Delivery {
                subject: subject.clone(),
                payload: payload.clone(),
                metadata: header.metadata.as_ref().clone(),
                from: Some(from),
                ack,
            };
            match sub.try_push(delivery) {
                Ok(()) => {}
                Err(PushError::Gone(d)) => self.gone(d),
                Err(PushError::Full(d)) => blocked.push((sub, d)),
            }
        }
        blocked
    }

    /// A delivery found its subscription ended: failed back (at-least-once) or counted.
    fn gone(&self, delivery: Delivery) {
        match delivery.ack {
            Some(ack) => self.answer(ack, Err("the subscription ended".into())),
            None => {
                self.counters.unrouted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// An event its publisher could not encode.
fn bad_event(e: Error) -> Error {
    Error::client(Code::BadRequest, e.detail().to_string())
}

fn codec(json: bool) -> ContentType {
    if json {
        ContentType::Json
    } else {
        ContentType::Bincode
    }
}
