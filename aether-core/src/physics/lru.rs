//! A table of at most `capacity` entries that forgets the least recently used
//! one: what keeps the physics engine's memory bounded under any number of
//! distinct channels, keys, payloads or edges.
//!
//! Entries are found by a 64-bit fingerprint of their identity (a keyed
//! SipHash, so nobody can aim two identities at one fingerprint); each entry
//! keeps its identity and the caller compares it, so the table never needs
//! to allocate a key to look one up. The recency order is a doubly linked
//! list threaded through a slab of slots: touch, insert and evict are O(1),
//! and slots are reused, so the slab never grows past the capacity.

use std::fmt;

use rustc_hash::FxHashMap;

const NONE: u32 = u32::MAX;

struct Slot<V> {
    fingerprint: u64,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
    /// `None` while the slot is free.
    value: Option<V>,
}

pub(crate) struct Lru<V> {
    index: FxHashMap<u64, u32>,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to go.
    tail: u32,
    capacity: usize,
}

impl<V> Lru<V> {
    /// An empty table of at most `capacity` (at least 1, below `u32::MAX`)
    /// entries.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, NONE as usize - 1);
        Self {
            index: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NONE,
            tail: NONE,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The entry of `fingerprint`, made most recently used; if there is none,
    /// a new one from `make`. When the table is full, the least recently used
    /// entry is forgotten first and handed to `make`, which may reuse its
    /// allocations (so a full table under a flood of new keys allocates
    /// nothing).
    pub(crate) fn get_or_insert_with(
        &mut self,
        fingerprint: u64,
        make: impl FnOnce(Option<V>) -> V,
    ) -> &mut V {
        let slot = match self.index.get(&fingerprint) {
            Some(&slot) => {
                self.unlink(slot);
                slot
            }
            None => {
                let evicted = if self.index.len() >= self.capacity {
                    self.pop_lru()
                } else {
                    None
                };
                let slot = Slot {
                    fingerprint,
                    prev: NONE,
                    next: NONE,
                    value: Some(make(evicted)),
                };
                let at = match self.free.pop() {
                    Some(at) => {
                        self.slots[at as usize] = slot;
                        at
                    }
                    None => {
                        self.slots.push(slot);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.index.insert(fingerprint, at);
                at
            }
        };
        self.push_front(slot);
        self.slots[slot as usize]
            .value
            .as_mut()
            .expect("an indexed slot holds a value")
    }

    /// The least recently used entry.
    pub(crate) fn peek_lru(&self) -> Option<&V> {
        self.value(self.tail)
    }

    /// Forgets the least recently used entry and returns it.
    pub(crate) fn pop_lru(&mut self) -> Option<V> {
        (self.tail != NONE).then(|| self.remove_slot(self.tail))
    }

    /// Forgets every entry for which `keep` is false.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        let mut at = self.head;
        while at != NONE {
            let next = self.slots[at as usize].next;
            if !self.value(at).is_some_and(&mut keep) {
                self.remove_slot(at);
            }
            at = next;
        }
    }

    /// Forgets, from the least recently used end, at most `most` entries
    /// last seen (`last`) more than `span` before `now`: amortized
    /// expiry, a little on each use.
    pub(crate) fn sweep(&mut self, most: usize, now: u64, span: u64, last: impl Fn(&V) -> u64) {
        for _ in 0..most {
            match self.peek_lru() {
                Some(v) if last(v).saturating_add(span) < now => {
                    self.pop_lru();
                }
                _ => break,
            }
        }
    }

    /// Forgets every entry last seen (`last`) more than `span` before
    /// `now`.
    pub(crate) fn expire(&mut self, now: u64, span: u64, last: impl Fn(&V) -> u64) {
        self.retain(|v| last(v).saturating_add(span) >= now);
    }

    /// The entries, most recently used first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &V> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            let value = self.value(at)?;
            at = self.slots[at as usize].next;
            Some(value)
        })
    }

    fn value(&self, at: u32) -> Option<&V> {
        self.slots.get(at as usize).and_then(|s| s.value.as_ref())
    }

    fn remove_slot(&mut self, at: u32) -> V {
        self.unlink(at);
        let slot = &mut self.slots[at as usize];
        self.index.remove(&slot.fingerprint);
        self.free.push(at);
        slot.value.take().expect("a linked slot holds a value")
    }

    fn unlink(&mut self, at: u32) {
        let (prev, next) = {
            let slot = &self.slots[at as usize];
            (slot.prev, slot.next)
        };
        if prev == NONE {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, at: u32) {
        let old = self.head;
        {
            let slot = &mut self.slots[at as usize];
            slot.prev = NONE;
            slot.next = old;
        }
        if old == NONE {
            self.tail = at;
        } else {
            self.slots[old as usize].prev = at;
        }
        self.head = at;
    }
}

impl<V> fmt::Debug for Lru<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lru")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lru: &Lru<u64>) -> Vec<u64> {
        lru.iter().copied().collect()
    }

    #[test]
    fn forgets_the_least_recently_used() {
        let mut lru = Lru::new(3);
        for k in 1..=3 {
            lru.get_or_insert_with(k, |_| k);
        }
        assert_eq!(keys(&lru), [3, 2, 1]);
        lru.get_or_insert_with(1, |_| unreachable!());
        assert_eq!(keys(&lru), [1, 3, 2]);
        let mut evicted = None;
        lru.get_or_insert_with(4, |old| {
            evicted = old;
            4
        });
        assert_eq!(evicted, Some(2), "the least recently used is handed over");
        assert_eq!(keys(&lru), [4, 1, 3]);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.peek_lru(), Some(&3));
        assert_eq!(lru.pop_lru(), Some(3));
        assert_eq!(keys(&lru), [4, 1]);
    }

    #[test]
    fn retain_and_reuse_slots() {
        let mut lru = Lru::new(10);
        for k in 0..10 {
            lru.get_or_insert_with(k, |_| k);
        }
        lru.retain(|v| v % 2 == 0);
        assert_eq!(keys(&lru), [8, 6, 4, 2, 0]);
        for k in 10..15 {
            lru.get_or_insert_with(k, |_| k);
        }
        assert_eq!(lru.len(), 10);
        assert_eq!(lru.slots.len(), 10, "freed slots are reused");
        lru.retain(|_| false);
        assert_eq!(lru.len(), 0);
        assert_eq!(lru.pop_lru(), None);
        assert_eq!(keys(&lru), Vec::<u64>::new());
    }

    #[test]
    fn a_capacity_of_one() {
        let mut lru = Lru::new(1);
        for k in 0..100 {
            *lru.get_or_insert_with(k % 7, |_| 0) += 1;
            assert_eq!(lru.len(), 1);
        }
        assert_eq!(lru.slots.len(), 1);
    }
}
