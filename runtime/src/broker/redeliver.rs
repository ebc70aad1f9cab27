//! At-least-once, the publisher's side of a failed attempt: send it again, to whom, and the
//! dead letter after the last one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::event::{DeadLetter, Payload};
use super::frame::WireTarget;
use super::outbox::{Sent, Tracked, TrackedView};
use super::resolve::{Route, Target};
use super::subscription::{AckTo, Delivery};
use super::Broker;
use crate::codec::ContentType;

/// How long a redelivery or a dead letter may wait for room in its subscribers' buffers.
const RESEND_TIMEOUT: Duration = Duration::from_secs(10);

impl Broker {
    /// Sends delivery `id` again (its next attempt): to the same subscription (or its successor
    /// on a restarted node), or to another member of its queue group.
    pub(super) async fn resend(&self, id: u64) {
        let Some(view) = self.outbox.view(id) else {
            return;
        };
        let route = self.routes.get(
            view.subject.as_str(),
            &self.registry,
            &self.services.subscriptions,
            &self.node,
        );
        let target = route
            .as_ref()
            .ok()
            .and_then(|r| self.redelivery_target(&view, r));
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
        let to = AckTo {
            id,
            attempt,
            origin: None,
        };
        let deadline = Instant::now() + RESEND_TIMEOUT;
        let sent = match target {
            None => Err(format!(
                "no subscriber for {} is reachable",
                view.subject.as_str()
            )),
            Some(Target::Local(sub)) => {
                let delivery = Delivery {
                    subject: view.subject.as_str().into(),
                    payload: view.payload,
                    metadata: view.metadata,
                    from: None,
                    ack: Some(to),
                };
                // A failure to queue has already failed the attempt.
                let _ = self.push_local(&sub, delivery, Some(deadline)).await;
                Ok(())
            }
            Some(Target::Remote(sub)) => {
                let addr = sub.addr;
                let targets = [WireTarget {
                    sub: sub.id,
                    ack: Some((id, attempt)),
                }];
                let framed = self.event_frame(
                    view.subject.as_str(),
                    &view.payload,
                    &view.metadata,
                    &targets,
                    sub.json,
                    None,
                );
                match framed {
                    Ok(framed) => self.send_frame(addr, framed, deadline).await,
                    Err(e) => Err(e),
                }
                .map_err(|e| e.detail().to_string())
            }
        };
        if let Err(why) = sent {
            self.answer(to, Err(why));
        }
    }

    /// Where a redelivery goes: a queue group's members other than the last one tried when
    /// there are any; for a plain subscription, the same node, service and pattern.
    fn redelivery_target<'r>(&self, view: &TrackedView, route: &'r Route) -> Option<Target<'r>> {
        let candidates: Vec<Target<'r>> = match &view.group {
            Some(group) => route.group(group),
            None => route
                .plain()
                .filter(|t| match t {
                    Target::Local(s) => {
                        *view.node == *self.node
                            && s.service == view.service
                            && s.terms.pattern.as_str() == &*view.pattern
                    }
                    Target::Remote(s) => {
                        s.node == view.node
                            && s.service == view.service
                            && s.pattern == view.pattern
                    }
                })
                .collect(),
        };
        let is_last = |t: &Target<'_>| match (t, &view.sent) {
            (Target::Local(s), Sent::Local { id }) => s.id == *id,
            (Target::Remote(s), Sent::Remote { addr, id }) => s.addr == *addr && s.id == *id,
            _ => false,
        };
        match candidates.iter().position(|t| !is_last(t)) {
            Some(i) => candidates.into_iter().nth(i),
            None => candidates.into_iter().next(),
        }
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
                RESEND_TIMEOUT,
            )
            .await;
        if let Err(e) = published {
            tracing::warn!(node = %self.node, subject = %subject.as_str(), error = %e, "dead letter could not be published");
        }
    }
}
