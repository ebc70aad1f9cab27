//! Subscriptions as gossip carries them, and the cluster-wide table a publisher reads to find
//! which nodes get a copy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use colony_actors::broker::{Pattern, Redelivery, Subject, Table};
use serde::{Deserialize, Serialize};

use super::subscription::LocalSubscription;

/// One subscription as advertised with its service (`svc:<name>` in gossip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubscriptionAd {
    pub(crate) id: u64,
    pub(crate) pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) queue: Option<String>,
    /// Wants events as JSON.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) json: bool,
    /// At-least-once: the subscriber's redelivery terms, which the publisher applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) redelivery: Option<RedeliveryAd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dead_letter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RedeliveryAd {
    pub(crate) ack_wait_ms: u64,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_ms: u64,
    pub(crate) max_backoff_ms: u64,
}

impl From<Redelivery> for RedeliveryAd {
    fn from(r: Redelivery) -> Self {
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        Self {
            ack_wait_ms: ms(r.ack_wait),
            max_attempts: r.max_attempts,
            backoff_ms: ms(r.backoff),
            max_backoff_ms: ms(r.max_backoff),
        }
    }
}

impl From<RedeliveryAd> for Redelivery {
    fn from(r: RedeliveryAd) -> Self {
        Self {
            ack_wait: Duration::from_millis(r.ack_wait_ms.max(1)),
            max_attempts: r.max_attempts.clamp(1, 1000),
            backoff: Duration::from_millis(r.backoff_ms),
            max_backoff: Duration::from_millis(r.max_backoff_ms),
        }
    }
}

impl SubscriptionAd {
    pub(crate) fn of(sub: &LocalSubscription) -> Self {
        Self {
            id: sub.id,
            pattern: sub.terms.pattern.as_str().to_string(),
            queue: sub.terms.queue.as_deref().map(str::to_string),
            json: sub.terms.json,
            redelivery: sub.terms.redelivery.map(Into::into),
            dead_letter: sub
                .terms
                .dead_letter
                .as_ref()
                .map(|s| s.as_str().to_string()),
        }
    }
}

/// A subscription as `colony describe` and the registry show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// The subject pattern: `orders.created`, `orders.*`, `orders.>`.
    pub pattern: String,
    /// The queue group, if any.
    pub queue: Option<String>,
    /// At-least-once (else at-most-once).
    pub at_least_once: bool,
}

impl From<&SubscriptionAd> for SubscriptionInfo {
    fn from(ad: &SubscriptionAd) -> Self {
        Self {
            pattern: ad.pattern.clone(),
            queue: ad.queue.clone(),
            at_least_once: ad.redelivery.is_some(),
        }
    }
}

/// A subscription somewhere in the cluster, as [`Registry::subscriptions`] lists it.
///
/// [`Registry::subscriptions`]: crate::Registry::subscriptions
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscribing node's name.
    pub node: String,
    /// Where it is.
    pub addr: SocketAddr,
    /// The subscribing service.
    pub service: String,
    /// The pattern, the queue group and the guarantee.
    #[serde(flatten)]
    pub info: SubscriptionInfo,
}

/// Another node's subscription, as this node's view holds it.
#[derive(Debug, Clone)]
pub(crate) struct RemoteSubscription {
    pub(crate) node: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) service: Arc<str>,
    pub(crate) id: u64,
    pub(crate) pattern: Arc<str>,
    pub(crate) queue: Option<Arc<str>>,
    pub(crate) json: bool,
    pub(crate) redelivery: Option<Redelivery>,
    pub(crate) dead_letter: Option<Subject>,
}

/// Every node's subscriptions, rebuilt with each gossip view.
#[derive(Debug, Default)]
pub(crate) struct ClusterSubscriptions {
    table: Table<usize>,
    subs: Vec<RemoteSubscription>,
}

impl ClusterSubscriptions {
    /// Adds one node's advertised subscription; an unreadable pattern is skipped.
    pub(crate) fn add(&mut self, node: &str, addr: SocketAddr, service: &str, ad: SubscriptionAd) {
        let Ok(pattern) = Pattern::new(&ad.pattern) else {
            tracing::debug!(node, service, pattern = %ad.pattern, "ignoring an unreadable subscription pattern");
            return;
        };
        let index = self.subs.len();
        self.table.insert(index, pattern, ad.queue.as_deref());
        self.subs.push(RemoteSubscription {
            node: node.into(),
            addr,
            service: service.into(),
            id: ad.id,
            pattern: ad.pattern.into(),
            queue: ad.queue.map(Into::into),
            json: ad.json,
            redelivery: ad.redelivery.map(Into::into),
            dead_letter: ad.dead_letter.as_deref().and_then(|s| Subject::new(s).ok()),
        });
    }

    /// The subscriptions of nodes other than `this` that `subject` reaches, by index: plain
    /// ones, and the members of each queue group.
    pub(crate) fn matches(
        &self,
        subject: &Subject,
        this: &str,
    ) -> (Vec<usize>, BTreeMap<Arc<str>, Vec<usize>>) {
        if self.subs.is_empty() {
            return (Vec::new(), BTreeMap::new());
        }
        let found = self.table.matches(subject);
        let others = |i: &usize| Some(*i).filter(|i| &*self.subs[*i].node != this);
        let plain = found.plain.iter().filter_map(others).collect();
        let groups = found
            .groups
            .into_iter()
            .map(|(group, members)| (group, members.iter().filter_map(others).collect()))
            .collect();
        (plain, groups)
    }

    /// Every subscription, in node order.
    pub(crate) fn list(&self) -> Vec<Subscription> {
        let mut all: Vec<Subscription> = self
            .subs
            .iter()
            .map(|s| Subscription {
                node: s.node.to_string(),
                addr: s.addr,
                service: s.service.to_string(),
                info: SubscriptionInfo {
                    pattern: s.pattern.to_string(),
                    queue: s.queue.as_deref().map(str::to_string),
                    at_least_once: s.redelivery.is_some(),
                },
            })
            .collect();
        all.sort_by(|a, b| (&a.node, &a.service).cmp(&(&b.node, &b.service)));
        all
    }

    /// The subscription at `index` (from [`matches`](Self::matches)).
    pub(crate) fn get(&self, index: usize) -> &RemoteSubscription {
        &self.subs[index]
    }
}
