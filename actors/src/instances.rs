//! The live instances of one service, readable by callers without asking the supervisor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;

use ractor::ActorRef;

/// The current mailbox of every instance of a service.
///
/// The supervisor writes a slot when it starts or restarts an instance; callers read it to pick
/// an instance round-robin. Reads take a brief uncontended read lock and clone one `ActorRef`.
pub struct Instances<M> {
    slots: RwLock<Vec<Option<ActorRef<M>>>>,
    next: AtomicUsize,
    restarts: AtomicU64,
}

impl<M> std::fmt::Debug for Instances<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("live", &self.live())
            .field("restarts", &self.restarts())
            .finish()
    }
}

impl<M> Instances<M> {
    pub(crate) fn new(count: usize) -> Self {
        Self {
            slots: RwLock::new((0..count).map(|_| None).collect()),
            next: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
        }
    }

    /// The next live instance in round-robin order, or `None` if none is running.
    pub fn pick(&self) -> Option<ActorRef<M>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let n = slots.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| slots[(start + i) % n].clone())
    }

    /// How many instances are running now.
    pub fn live(&self) -> usize {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().filter(|s| s.is_some()).count()
    }

    /// How many times an instance has been restarted since the service started.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, slot: usize, actor: Option<ActorRef<M>>) {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        slots[slot] = actor;
    }

    pub(crate) fn slot_of(&self, id: ractor::ActorId) -> Option<usize> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|a| a.get_id() == id))
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn clear(&self) {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        slots.iter_mut().for_each(|s| *s = None);
    }
}
