//! The outbox: waves emitted while the connection is down, kept in order.
//!
//! While the client is connected and nothing waits here, emits go straight
//! to the connection. Otherwise they are appended here (or refused when the
//! outbox is full), and after a reconnect the flusher sends them in order.
//! While it flushes, new emits queue behind, so one emitter's waves never
//! overtake each other.

use std::{
    collections::VecDeque,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;

use crate::connection::ConnectionCounters;

/// A wave ready for the wire: its subject, its reply subject (a tracked
/// wave's probe subject), and its envelope.
pub(super) type Outgoing = (String, Option<String>, Bytes);

pub(super) struct Outbox {
    queue: Mutex<VecDeque<Outgoing>>,
    capacity: usize,
    /// Set while the flusher sends; emits then queue behind it.
    flushing: AtomicBool,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            flushing: AtomicBool::new(false),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Outgoing>> {
        // Every change is one push or pop: a panic elsewhere cannot leave the
        // queue inconsistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an emit may bypass the outbox (given that the client is
    /// connected): nothing waits and nothing is being flushed.
    pub(super) fn is_idle(&self, counters: &ConnectionCounters) -> bool {
        !self.flushing.load(Ordering::Acquire) && counters.outbox_len.load(Ordering::Acquire) == 0
    }

    /// Appends a wave; gives it back if the outbox is full.
    pub(super) fn push(
        &self,
        item: Outgoing,
        counters: &ConnectionCounters,
    ) -> Result<(), Outgoing> {
        let mut queue = self.lock();
        if queue.len() >= self.capacity {
            return Err(item);
        }
        queue.push_back(item);
        counters.outbox_len.store(queue.len(), Ordering::Release);
        Ok(())
    }

    /// Marks the start of a flush.
    pub(super) fn start_flush(&self) {
        self.flushing.store(true, Ordering::Release);
    }

    /// The next wave to send, or `None` when the outbox is empty, which also
    /// ends the flush (under the lock, so no wave is appended unseen).
    pub(super) fn next_to_flush(&self, counters: &ConnectionCounters) -> Option<Outgoing> {
        let mut queue = self.lock();
        let item = queue.pop_front();
        counters.outbox_len.store(queue.len(), Ordering::Release);
        if item.is_none() {
            self.flushing.store(false, Ordering::Release);
        }
        item
    }

    /// Puts back a wave the flusher could not send (the connection dropped
    /// again), at the front, and ends this flush.
    pub(super) fn put_back(&self, item: Outgoing, counters: &ConnectionCounters) {
        let mut queue = self.lock();
        queue.push_front(item);
        counters.outbox_len.store(queue.len(), Ordering::Release);
        self.flushing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u8) -> Outgoing {
        (format!("s.{n}"), None, Bytes::from(vec![n]))
    }

    #[test]
    fn keeps_order_and_refuses_past_capacity() {
        let counters = ConnectionCounters::default();
        let outbox = Outbox::new(2);
        assert!(outbox.is_idle(&counters));
        outbox.push(item(1), &counters).unwrap();
        outbox.push(item(2), &counters).unwrap();
        assert_eq!(outbox.push(item(3), &counters).unwrap_err(), item(3));
        assert!(!outbox.is_idle(&counters));
        outbox.start_flush();
        assert_eq!(outbox.next_to_flush(&counters), Some(item(1)));
        // Appended during the flush: sent after what was there.
        outbox.push(item(4), &counters).unwrap();
        assert_eq!(outbox.next_to_flush(&counters), Some(item(2)));
        assert!(!outbox.is_idle(&counters));
        assert_eq!(outbox.next_to_flush(&counters), Some(item(4)));
        assert_eq!(outbox.next_to_flush(&counters), None);
        assert!(outbox.is_idle(&counters));
    }

    #[test]
    fn put_back_goes_first() {
        let counters = ConnectionCounters::default();
        let outbox = Outbox::new(3);
        outbox.push(item(1), &counters).unwrap();
        outbox.push(item(2), &counters).unwrap();
        outbox.start_flush();
        let first = outbox.next_to_flush(&counters).unwrap();
        outbox.put_back(first, &counters);
        assert!(!outbox.is_idle(&counters));
        outbox.start_flush();
        assert_eq!(outbox.next_to_flush(&counters), Some(item(1)));
    }
}
