//! This node's subscriptions: by id (for events that name their targets) and by pattern (for
//! publishes from this node).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use colony_actors::broker::{Matches, Subject, Table};
use dashmap::DashMap;

use super::subscription::LocalSubscription;

/// A new subscription id: unique in the process, never reused, so an event for a subscription
/// that ended cannot reach its successor.
pub(crate) fn next_subscription_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The subscriptions of the services running on this node.
#[derive(Default)]
pub(crate) struct LocalSubscriptions {
    table: RwLock<Table<u64>>,
    by_id: DashMap<u64, Arc<LocalSubscription>>,
    /// Grows with every change: routes cached by publishers are rebuilt when it moves.
    version: AtomicU64,
}

impl LocalSubscriptions {
    /// Registers a service's subscriptions (it was just added to the node's services).
    pub(crate) fn add(&self, subscriptions: &[Arc<LocalSubscription>]) {
        if subscriptions.is_empty() {
            return;
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        for sub in subscriptions {
            table.insert(
                sub.id,
                sub.terms.pattern.clone(),
                sub.terms.queue.as_deref(),
            );
            self.by_id.insert(sub.id, sub.clone());
        }
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends a service's subscriptions (it was removed from the node's services).
    pub(crate) fn end(&self, subscriptions: &[Arc<LocalSubscription>]) {
        if subscriptions.is_empty() {
            return;
        }
        {
            let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
            for sub in subscriptions {
                table.remove(&sub.id);
                self.by_id.remove(&sub.id);
            }
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        for sub in subscriptions {
            sub.close();
        }
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<LocalSubscription>> {
        self.by_id.get(&id).map(|s| s.value().clone())
    }

    /// The local subscriptions `subject` reaches.
    pub(crate) fn matches(&self, subject: &Subject) -> Matches<u64> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.matches(subject)
    }

    /// Which set of subscriptions this is: changes with every add and end.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}
