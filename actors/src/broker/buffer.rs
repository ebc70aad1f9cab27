//! A subscriber's bounded buffer, and what happens when it is full.

use std::collections::VecDeque;

/// What a full subscriber buffer does with one more message, chosen per subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overflow {
    /// Hand it back: the publisher waits for room (within its deadline), so nothing is lost
    /// and a slow subscriber slows its publishers.
    #[default]
    Block,
    /// Drop the oldest waiting message, counted: publishers never wait, a slow subscriber
    /// sees the newest messages. With at-least-once delivery the owner must fail the displaced
    /// message's attempt (it redelivers or dead-letters it), or it is lost.
    DropOldest,
}

/// What [`Bounded::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Queued.
    Queued,
    /// Full, [`Overflow::Block`]: the message is handed back, nothing was queued.
    Full(T),
    /// Full, [`Overflow::DropOldest`]: queued, and this oldest one was dropped to make room.
    Displaced(T),
}

/// Messages waiting for one subscriber: at most `capacity`, never more.
#[derive(Debug)]
pub struct Bounded<T> {
    items: VecDeque<T>,
    capacity: usize,
    overflow: Overflow,
    dropped: u64,
}

impl<T> Bounded<T> {
    /// An empty buffer of `capacity` (at least 1).
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            overflow,
            dropped: 0,
        }
    }

    /// Queues `item`, or applies the overflow policy when full.
    pub fn push(&mut self, item: T) -> Pushed<T> {
        if self.items.len() < self.capacity {
            self.items.push_back(item);
            return Pushed::Queued;
        }
        match self.overflow {
            Overflow::Block => Pushed::Full(item),
            Overflow::DropOldest => {
                let oldest = self.items.pop_front();
                self.items.push_back(item);
                self.dropped += 1;
                match oldest {
                    Some(oldest) => Pushed::Displaced(oldest),
                    None => Pushed::Queued,
                }
            }
        }
    }

    /// The oldest waiting message.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if none is.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages dropped by [`Overflow::DropOldest`] so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hands_back_and_never_grows() {
        let mut b = Bounded::new(2, Overflow::Block);
        assert_eq!(b.push(1), Pushed::Queued);
        assert_eq!(b.push(2), Pushed::Queued);
        assert_eq!(b.push(3), Pushed::Full(3));
        assert_eq!((b.len(), b.dropped()), (2, 0));
        assert_eq!(b.pop(), Some(1));
        assert_eq!(b.push(3), Pushed::Queued);
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let mut b = Bounded::new(2, Overflow::DropOldest);
        for i in 1..=5 {
            b.push(i);
        }
        assert_eq!((b.len(), b.dropped()), (2, 3));
        assert_eq!((b.pop(), b.pop(), b.pop()), (Some(4), Some(5), None));
    }
}
