//! A budget of bytes shared by many maps: a keeper's `max_bytes`, the
//! keys and values of every map it keeps counted together.
//!
//! Each [`Store`](super::store::Store) holding a share takes from it what
//! it grows by and gives back what it shrinks by, and all it holds when it
//! is dropped; a growth past the budget is refused as a map's own cap is.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// Bytes that maps together may hold.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Takes `bytes` if they fit.
    pub(crate) fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= self.limit)
            })
            .is_ok()
    }

    /// Takes `bytes` whether they fit or not: what a map held on disk
    /// before it was opened.
    pub(crate) fn force(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives `bytes` back.
    pub(crate) fn give(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Bytes that may be held.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

/// A store's share of a budget. A clone of the store holds none (a copy
/// is not a second map), so what is given back is what was taken.
#[derive(Debug, Default)]
pub(crate) struct Share(Option<Arc<Budget>>);

impl Share {
    pub(crate) fn of(budget: Arc<Budget>) -> Self {
        Self(Some(budget))
    }

    pub(crate) fn take(&self, bytes: u64) -> bool {
        self.0.as_ref().is_none_or(|b| b.take(bytes))
    }

    pub(crate) fn force(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.force(bytes);
        }
    }

    pub(crate) fn give(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.give(bytes);
        }
    }

    pub(crate) fn budget(&self) -> Option<&Arc<Budget>> {
        self.0.as_ref()
    }
}

impl Clone for Share {
    fn clone(&self) -> Self {
        Self(None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever is asked, what is held never passes the limit unless
        /// forced, and giving back all that was taken leaves nothing.
        #[test]
        fn a_budget_holds_what_was_taken_and_no_more(
            limit in 0u64..10_000,
            asks in prop::collection::vec(0u64..4_000, 0..40),
        ) {
            let budget = Budget::new(limit);
            let mut taken = 0u64;
            for ask in asks {
                let before = budget.used();
                if budget.take(ask) {
                    taken += ask;
                    prop_assert!(before + ask <= limit);
                } else {
                    prop_assert!(before + ask > limit);
                    prop_assert_eq!(budget.used(), before);
                }
                prop_assert!(budget.used() <= limit);
            }
            prop_assert_eq!(budget.used(), taken);
            budget.give(taken);
            prop_assert_eq!(budget.used(), 0);
        }
    }
}
