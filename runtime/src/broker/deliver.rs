//! The broker's paths: a publish resolved to subscriptions and sent, an event received from a
//! link, an at-least-once event sent again or dead-lettered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use colony_actors::broker::Subject;
use colony_quic::RecvStream;

use super::event::{DeadLetter, Payload};
use super::frame::{self, EventHeader, Frame, FrameReader, WireTarget};
use super::link::Outgoing;
use super::outbox::{Sent, Tracked};
use super::routes::RemoteSubscription;
use super::subscription::{AckTo, Delivery, LocalSubscription, PushError};
use super::{Broker, Published};
use crate::codec::ContentType;
use crate::context::Metadata;
use crate::error::{Code, Error, Origin};

/// How long a dead letter may wait for room in its subscribers' buffers.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(10);

/// One subscription a publish reaches.
enum Target<'v> {
    Local(Arc<LocalSubscription>),
    Remote(&'v RemoteSubscription),
}

impl Target<'_> {
    fn at_least_once(&self) -> bool {
        match self {
            Target::Local(s) => s.terms.redelivery.is_some(),
            Target::Remote(s) => s.redelivery.is_some(),
        }
    }
}

/// What one node's copy of an event is for.
#[derive(Default)]
struct Copy {
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
        let subject = Subject::new(subject).map_err(|e| {
            Error::client(
                Code::BadRequest,
                format!("invalid subject {subject:?}: {e}"),
            )
        })?;
        let deadline = Instant::now() + timeout;
        let view = self.registry.current();
        let targets = self.resolve(&subject, &view.subscriptions);
        if targets.is_empty() {
            return Ok(Published::default());
        }
        let subject_str: Arc<str> = subject.as_str().into();
        let mut local = Vec::new();
        let mut remote: BTreeMap<SocketAddr, Copy> = BTreeMap::new();
        for target in &targets {
            let ack = target
                .at_least_once()
                .then(|| self.track(&subject, &payload, &metadata, target));
            match target {
                Target::Local(sub) => local.push((sub.clone(), ack)),
                Target::Remote(sub) => {
                    let copy = remote.entry(sub.addr).or_default();
                    copy.json |= sub.json;
                    copy.targets.push(WireTarget { sub: sub.id, ack });
                }
            }
        }
        let published = Published {
            nodes: remote.len() + usize::from(!local.is_empty()),
            subscriptions: targets.len(),
        };
        drop(targets);
        // Encoded at most once per codec, before anything is sent: a too-large event fails
        // whole.
        let mut bodies: [Option<Bytes>; 2] = [None, None];
        let mut frames = Vec::with_capacity(remote.len());
        for (addr, copy) in remote {
            let content_type = if copy.json {
                ContentType::Json
            } else {
                ContentType::Bincode
            };
            let slot = &mut bodies[usize::from(copy.json)];
            let body = match slot {
                Some(body) => body.clone(),
                None => slot.insert(self.encode(&payload, content_type)?).clone(),
            };
            let header = EventHeader {
                subject: subject_str.to_string(),
                content_type,
                reply_to: copy
                    .targets
                    .iter()
                    .any(|t| t.ack.is_some())
                    .then_some(self.addr),
                targets: copy.targets,
                timeout_ms: millis(deadline),
                metadata: metadata.clone(),
            };
            frames.push((addr, frame::event(&header, &body)?));
        }
        for (sub, ack) in local {
            let ack = ack.map(|(id, attempt)| AckTo {
                id,
                attempt,
                origin: None,
            });
            let delivery = Delivery {
                subject: subject_str.clone(),
                payload: payload.clone(),
                metadata: metadata.clone(),
                from: None,
                ack,
            };
            self.push_local(&sub, delivery, deadline).await?;
        }
        for (addr, frame) in frames {
            let link = self.link(addr);
            match tokio::time::timeout_at(deadline.into(), link.send(Outgoing::Event(frame))).await {
                Ok(Ok(())) => {}
                Ok(Err(())) => {
                    return Err(Error::client(
                        Code::Unavailable,
                        format!("the link to {addr} closed (node shutting down)"),
                    ))
                }
                Err(_) => {
                    return Err(Error::client(
                        Code::Timeout,
                        format!("subscribers on {addr} did not take the event before the deadline: their buffers are full"),
                    ))
                }
            }
        }
        Ok(published)
    }

    /// The subscriptions `subject` reaches: every plain one, one member of each queue group.
    fn resolve<'v>(
        &self,
        subject: &Subject,
        cluster: &'v super::ClusterSubscriptions,
    ) -> Vec<Target<'v>> {
        let mut targets = Vec::new();
        let mut groups: BTreeMap<Arc<str>, Vec<Target<'v>>> = BTreeMap::new();
        if !self.services.subscriptions.is_empty() {
            let found = self.services.subscriptions.matches(subject);
            let local = |id: &u64| self.services.subscriptions.get(*id).map(Target::Local);
            targets.extend(found.plain.iter().filter_map(local));
            for (group, members) in found.groups {
                groups
                    .entry(group)
                    .or_default()
                    .extend(members.iter().filter_map(local));
            }
        }
        if !cluster.is_empty() {
            let (plain, remote_groups) = cluster.matches(subject, &self.node);
            targets.extend(plain.into_iter().map(Target::Remote));
            for (group, members) in remote_groups {
                groups
                    .entry(group)
                    .or_default()
                    .extend(members.into_iter().map(Target::Remote));
            }
        }
        for (_, mut members) in groups {
            if members.is_empty() {
                continue;
            }
            let turn = self.rotation.fetch_add(1, Ordering::Relaxed) as usize % members.len();
            targets.push(members.swap_remove(turn));
        }
        targets
    }

    /// Starts tracking an at-least-once delivery; returns (delivery id, attempt).
    fn track(
        &self,
        subject: &Subject,
        payload: &Payload,
        metadata: &Metadata,
        target: &Target<'_>,
    ) -> (u64, u32) {
        let id = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        let tracked = match target {
            Target::Local(sub) => Tracked {
                subject: subject.clone(),
                payload: payload.clone(),
                metadata: metadata.clone(),
                policy: sub.terms.redelivery.unwrap_or_default(),
                group: sub.terms.queue.clone(),
                node: self.node.as_str().into(),
                service: sub.service.clone(),
                pattern: sub.terms.pattern.as_str().into(),
                dead_letter: Some(sub.terms.dead_letter.clone()),
                sent: Sent::Local { id: sub.id },
                last_error: String::new(),
            },
            Target::Remote(sub) => Tracked {
                subject: subject.clone(),
                payload: payload.clone(),
                metadata: metadata.clone(),
                policy: sub.redelivery.unwrap_or_default(),
                group: sub.queue.clone(),
                node: sub.node.clone(),
                service: sub.service.clone(),
                pattern: sub.pattern.clone(),
                dead_letter: sub.dead_letter.clone(),
                sent: Sent::Remote {
                    addr: sub.addr,
                    id: sub.id,
                },
                last_error: String::new(),
            },
        };
        (id, self.outbox.track(id, tracked))
    }

    fn encode(&self, payload: &Payload, content_type: ContentType) -> Result<Bytes, Error> {
        let body = payload
            .encode(content_type)
            .map_err(|e| Error::client(Code::BadRequest, e.detail().to_string()))?;
        if body.len() > self.max_event {
            return Err(Error::client(
                Code::TooLarge,
                format!(
                    "event of {} bytes exceeds the {} byte limit for events sent to other nodes",
                    body.len(),
                    self.max_event
                ),
            ));
        }
        Ok(body)
    }

    /// Queues a delivery in a subscription on this node; a subscription that is gone or stays
    /// full fails an at-least-once attempt (retried) and loses an at-most-once event.
    async fn push_local(
        &self,
        sub: &LocalSubscription,
        delivery: Delivery,
        deadline: Instant,
    ) -> Result<(), Error> {
        match sub.push(delivery, deadline).await {
            Ok(()) => Ok(()),
            Err(PushError::Gone(d)) => {
                match d.ack {
                    Some(ack) => self.answer(ack, Err("the subscription ended".into())),
                    None => {
                        self.counters.unrouted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            Err(PushError::Timeout(d)) => {
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
            match frame::decode(frame) {
                Ok(Frame::Event(header, body)) => self.receive(header, body, from).await,
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
    async fn receive(&self, header: EventHeader, body: Bytes, from: SocketAddr) {
        let deadline = Instant::now() + Duration::from_millis(u64::from(header.timeout_ms));
        let subject: Arc<str> = header.subject.into();
        let payload = Payload::Encoded {
            content_type: header.content_type,
            body,
        };
        let origin = header.reply_to.unwrap_or(from);
        for target in header.targets {
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
                metadata: header.metadata.clone(),
                from: Some(from),
                ack,
            };
            // A full blocking buffer holds the link (and so the publisher) until the
            // publisher's deadline; past it the event is dropped here, as the publisher
            // was told.
            let _ = self.push_local(&sub, delivery, deadline).await;
        }
    }

    /// Sends attempt `attempt` of delivery `id`: to the same subscription (or its successor
    /// on a restarted node), or to another member of its queue group.
    pub(super) async fn resend(&self, id: u64) {
        let Some(view) = self.outbox.view(id) else {
            return;
        };
        let cluster = self.registry.current();
        let target = self.redelivery_target(&view, &cluster.subscriptions);
        let sent = match &target {
            Some(Target::Local(sub)) => Sent::Local { id: sub.id },
            Some(Target::Remote(sub)) => Sent::Remote {
                addr: sub.addr,
                id: sub.id,
            },
            None => Sent::Nowhere,
        };
        let Some((attempt, view)) = self.outbox.resent(id, sent) else {
            return;
        };
        let deadline = Instant::now() + DEAD_LETTER_TIMEOUT;
        match target {
            None => self.answer(
                AckTo {
                    id,
                    attempt,
                    origin: None,
                },
                Err(format!(
                    "no subscriber for {} is reachable",
                    view.subject.as_str()
                )),
            ),
            Some(Target::Local(sub)) => {
                let delivery = Delivery {
                    subject: view.subject.as_str().into(),
                    payload: view.payload,
                    metadata: view.metadata,
                    from: None,
                    ack: Some(AckTo {
                        id,
                        attempt,
                        origin: None,
                    }),
                };
                let _ = self.push_local(&sub, delivery, deadline).await;
            }
            Some(Target::Remote(sub)) => {
                let content_type = if sub.json {
                    ContentType::Json
                } else {
                    ContentType::Bincode
                };
                let framed = self.encode(&view.payload, content_type).and_then(|body| {
                    frame::event(
                        &EventHeader {
                            subject: view.subject.as_str().to_string(),
                            content_type,
                            targets: vec![WireTarget {
                                sub: sub.id,
                                ack: Some((id, attempt)),
                            }],
                            reply_to: Some(self.addr),
                            timeout_ms: millis(deadline),
                            metadata: view.metadata.clone(),
                        },
                        &body,
                    )
                });
                match framed {
                    Ok(framed) => {
                        let _ = self.link(sub.addr).send(Outgoing::Event(framed)).await;
                    }
                    Err(e) => self.answer(
                        AckTo {
                            id,
                            attempt,
                            origin: None,
                        },
                        Err(e.detail().to_string()),
                    ),
                }
            }
        }
    }

    /// Where a redelivery goes: a queue group's members other than the last one tried when
    /// there are any; for a plain subscription, the same node, service and pattern.
    fn redelivery_target<'v>(
        &self,
        view: &super::outbox::TrackedView,
        cluster: &'v super::ClusterSubscriptions,
    ) -> Option<Target<'v>> {
        let last = &view.sent;
        let is_last = |t: &Target<'_>| match (t, last) {
            (Target::Local(s), Sent::Local { id }) => s.id == *id,
            (Target::Remote(s), Sent::Remote { addr, id }) => s.addr == *addr && s.id == *id,
            _ => false,
        };
        let candidates: Vec<Target<'v>> = match &view.group {
            Some(_) => self.group_members(view, cluster),
            None => self
                .resolve(&view.subject, cluster)
                .into_iter()
                .filter(|t| match t {
                    Target::Local(s) => {
                        *view.node == *self.node
                            && s.terms.queue.is_none()
                            && s.service == view.service
                            && s.terms.pattern.as_str() == &*view.pattern
                    }
                    Target::Remote(s) => {
                        s.queue.is_none()
                            && s.node == view.node
                            && s.service == view.service
                            && s.pattern == view.pattern
                    }
                })
                .collect(),
        };
        let fresh = candidates.iter().position(|t| !is_last(t));
        match fresh {
            Some(i) => candidates.into_iter().nth(i),
            None => candidates.into_iter().next(),
        }
    }

    /// Every member of the delivery's queue group that the subject reaches (resolve picks one
    /// per group; a redelivery wants to choose among all).
    fn group_members<'v>(
        &self,
        view: &super::outbox::TrackedView,
        cluster: &'v super::ClusterSubscriptions,
    ) -> Vec<Target<'v>> {
        let Some(group) = &view.group else {
            return Vec::new();
        };
        let mut members = Vec::new();
        if let Some(local) = self
            .services
            .subscriptions
            .matches(&view.subject)
            .groups
            .get(group)
        {
            members.extend(
                local
                    .iter()
                    .filter_map(|id| self.services.subscriptions.get(*id).map(Target::Local)),
            );
        }
        if let Some(remote) = cluster.matches(&view.subject, &self.node).1.remove(group) {
            members.extend(remote.into_iter().map(Target::Remote));
        }
        members
    }

    /// Publishes a delivery whose every attempt failed to its dead-letter subject.
    pub(super) async fn dead_letter(&self, tracked: Tracked, attempts: u32) {
        tracing::warn!(node = %self.node, subject = %tracked.subject.as_str(), service = %tracked.service, attempts, error = %tracked.last_error, "event dead-lettered");
        let Some(subject) = tracked.dead_letter else {
            return;
        };
        let content_type = match &tracked.payload {
            Payload::Encoded { content_type, .. } => *content_type,
            Payload::Local(_) => ContentType::Bincode,
        };
        let Ok(body) = tracked.payload.encode(content_type) else {
            return;
        };
        let letter = DeadLetter {
            subject: tracked.subject.as_str().to_string(),
            service: tracked.service.to_string(),
            attempts,
            error: tracked.last_error,
            content_type,
            body: body.to_vec(),
        };
        let published = self
            .publish(
                subject.as_str(),
                Payload::Local(Arc::new(letter)),
                tracked.metadata,
                DEAD_LETTER_TIMEOUT,
            )
            .await;
        if let Err(e) = published {
            tracing::warn!(node = %self.node, subject = %subject.as_str(), error = %e, "dead letter could not be published");
        }
    }
}

/// What is left until `deadline`, in ms, for the wire.
fn millis(deadline: Instant) -> u32 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .min(u128::from(u32::MAX)) as u32
}
