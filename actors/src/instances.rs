//! The live instances of one service, readable by callers without asking the supervisor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use crate::instance::{Child, Closed, InstanceId};
use crate::selector::random_below;

/// The depth given to an instance found stopped, so that no send picks it again before its
/// supervisor empties the slot (far above any mailbox capacity, far from overflowing).
const STOPPED: u32 = u32::MAX / 2;

/// Above this many instances a send compares two random instances instead of all of them.
const SCAN_ALL_UP_TO: usize = 16;

/// The current mailbox of every instance of a service, with how deep each one is.
///
/// The supervisor writes a slot when it starts or restarts an instance (a slot is empty while
/// its instance restarts, so nothing is sent there); [`send`](Self::send) gives a message to the
/// instance with the fewest messages waiting, so one slow instance does not keep a share of the
/// calls the way round-robin would.
pub struct Instances<M> {
    /// Each slot's instance, `None` while it restarts. Its mailbox counts the messages sent to
    /// it and not yet handled (queued plus the one at hand), per incarnation: a restart starts
    /// from zero.
    slots: RwLock<Vec<Option<Child<M>>>>,
    restarts: AtomicU64,
    last_failure: Mutex<Option<Failure>>,
    /// Messages an instance may have waiting (its mailbox capacity).
    capacity: u32,
}

/// The latest failure of an instance of the service: why, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The panic message, the start error, or the stop reason.
    pub reason: String,
    /// When the supervisor learned of it.
    pub at: SystemTime,
}

impl<M> std::fmt::Debug for Instances<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances")
            .field("live", &self.live())
            .field("restarts", &self.restarts())
            .finish()
    }
}

/// Why [`Instances::send`] gave a message back.
#[derive(Debug)]
pub enum SendError<M> {
    /// No instance is running (all restarting or stopped).
    NoInstance(M),
    /// Every live instance already has its mailbox capacity of messages waiting.
    Full(M),
}

impl<M> SendError<M> {
    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        match self {
            SendError::NoInstance(m) | SendError::Full(m) => m,
        }
    }
}

impl<M: Send> Instances<M> {
    /// Sends `msg` to the live instance with the fewest messages waiting; gives the message back
    /// when no instance is running, or when every one has its mailbox full (bounded mailboxes:
    /// a caller learns at once, and memory stays flat, instead of queueing without end).
    pub fn send(&self, mut msg: M) -> Result<(), SendError<M>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        // An instance may stop between being chosen and being sent to: try the others. The send
        // itself only queues the message, so holding the read lock across it is brief.
        for _ in 0..3 {
            let Some(slot) = least_loaded(&slots) else {
                return Err(SendError::NoInstance(msg));
            };
            let depth = |s: &Child<M>| s.mailbox.depth.load(Ordering::Relaxed);
            let full = |s: &Child<M>| depth(s) >= self.capacity;
            let slot = if full(slot) {
                // A sampled choice may have missed a free one: look at them all before refusing.
                match slots.iter().flatten().find(|s| !full(s)) {
                    Some(free) => free,
                    // Instances found stopped are not full: their slots are restarting.
                    None if slots.iter().flatten().all(|s| depth(s) >= STOPPED) => {
                        return Err(SendError::NoInstance(msg))
                    }
                    None => return Err(SendError::Full(msg)),
                }
            } else {
                slot
            };
            slot.mailbox.depth.fetch_add(1, Ordering::Relaxed);
            match slot.mailbox.send_message(msg) {
                Ok(()) => return Ok(()),
                Err(Closed(back)) => {
                    // This incarnation has stopped (its supervisor will replace the slot and its
                    // counter): make it look full so the next try goes elsewhere.
                    slot.mailbox.depth.store(STOPPED, Ordering::Relaxed);
                    msg = back;
                }
            }
        }
        Err(SendError::NoInstance(msg))
    }
}

fn least_loaded<M>(slots: &[Option<Child<M>>]) -> Option<&Child<M>> {
    let depth = |s: &Child<M>| s.mailbox.depth.load(Ordering::Relaxed);
    let n = slots.len();
    if n == 1 {
        return slots[0].as_ref();
    }
    if n > SCAN_ALL_UP_TO {
        // Power of two choices: nearly as good as the minimum, at constant cost.
        let (a, b) = (random_below(n), random_below(n));
        match (&slots[a], &slots[b]) {
            (Some(x), Some(y)) => return Some(if depth(y) < depth(x) { y } else { x }),
            (Some(x), None) | (None, Some(x)) => return Some(x),
            (None, None) => {}
        }
    }
    // Ties go to the first slot from a random start, so idle instances share the work.
    let start = if n > 1 { random_below(n) } else { 0 };
    (0..n)
        .filter_map(|k| slots[(start + k) % n].as_ref())
        .min_by_key(|s| depth(s))
}

impl<M> Instances<M> {
    pub(crate) fn new(count: usize, capacity: usize) -> Self {
        Self {
            slots: RwLock::new((0..count).map(|_| None).collect()),
            restarts: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            capacity: capacity.clamp(1, u32::MAX as usize / 4) as u32,
        }
    }

    /// Messages waiting in each instance's mailbox (the one being handled included), by slot;
    /// `None` for a slot whose instance is restarting.
    pub fn depths(&self) -> Vec<Option<u32>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .map(|s| {
                let depth = s.as_ref()?.mailbox.depth.load(Ordering::Relaxed);
                // An instance found stopped is waiting for its supervisor to empty the slot.
                (depth < STOPPED).then_some(depth)
            })
            .collect()
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

    /// The latest failure of any instance (`None` if none has failed).
    pub fn last_failure(&self) -> Option<Failure> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn record_failure(&self, reason: &str) {
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(Failure {
            reason: reason.to_string(),
            at: SystemTime::now(),
        });
    }

    /// Puts `child` in `slot`, handing back the one it replaces.
    pub(crate) fn set(&self, slot: usize, child: Option<Child<M>>) -> Option<Child<M>> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut slots[slot], child)
    }

    /// How many slots the service has (live or restarting).
    pub fn slots(&self) -> usize {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Grows to `count` empty new slots, or shrinks to `count`, handing back the instances of
    /// the slots removed (no call is sent to them from now on).
    pub(crate) fn resize(&self, count: usize) -> Vec<Child<M>> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if count >= slots.len() {
            slots.resize_with(count, || None);
            return Vec::new();
        }
        slots.drain(count..).flatten().collect()
    }

    /// Empties `slot`, handing back its instance.
    pub(crate) fn take(&self, slot: usize) -> Option<Child<M>> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        slots[slot].take()
    }

    /// The mailbox in `slot` now (tests aim at one instance with it).
    #[cfg(test)]
    pub(crate) fn mailbox(
        &self,
        slot: usize,
    ) -> Option<std::sync::Arc<crate::instance::Mailbox<M>>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots[slot].as_ref().map(|s| s.mailbox.clone())
    }

    pub(crate) fn is_live(&self, slot: usize) -> bool {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots[slot].is_some()
    }

    pub(crate) fn slot_of(&self, id: InstanceId) -> Option<usize> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.mailbox.get_id() == id))
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Empties every slot, handing back the instances.
    pub(crate) fn clear(&self) -> Vec<Child<M>> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        slots.iter_mut().filter_map(Option::take).collect()
    }
}
