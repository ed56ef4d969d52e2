//! A bounded memory of what was seen last: the last `N` keys, in a set for
//! lookups and in a queue to forget the oldest. Durable channels remember
//! the waves a vibrator handed out (to drop redeliveries); a receive queue
//! remembers the waves its group resonances brought (to drop the copies
//! that several queue subscriptions bring).

use std::{
    collections::{HashSet, VecDeque},
    hash::Hash,
};

/// The last `N` keys inserted. A key inserted again is not new, and keeps
/// its place.
pub(crate) struct Recent<K, const N: usize> {
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    seen: HashSet<K>,
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    order: VecDeque<K>,
}

impl<K, const N: usize> Default for Recent<K, N> {
    fn default() -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Hash + Eq + Copy, const N: usize> Recent<K, N> {
    /// Whether `key` is remembered.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.seen.contains(key)
    }

    /// Whether `key` is new, remembering it; past `N` keys the oldest is
    /// forgotten.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn insert(&mut self, key: K) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > N
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// How many keys are remembered (at most `N`).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_not_new_and_memory_stays_bounded() {
        const N: usize = 100;
        let mut recent = Recent::<u128, N>::default();
        assert!(recent.insert(1));
        assert!(!recent.insert(1));
        assert!(recent.contains(&1));
        for key in 2..(N as u128 + 10) {
            assert!(recent.insert(key));
            assert!(recent.len() <= N);
        }
        assert!(!recent.contains(&1));
        assert!(recent.insert(1), "forgotten once out of the window");
    }
}
