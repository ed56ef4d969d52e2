//! Faults the sample flow can be asked to make, for the physics engine to
//! find: used by `aether-service-alpha` and `aether-service-beta`.
//!
//! Each fault touches a share of the orders, spread evenly: with a share of
//! 0.05, one order in twenty, always the same ones for the same count, so a
//! run can be checked against what it was asked to do. A share of 0 (the
//! default everywhere) is the plain flow.

use std::collections::{HashMap, VecDeque};

use crate::settings::SettingsError;

/// The share every fault takes with `--faults`: one order in twenty.
pub const DEMO_SHARE: f64 = 0.05;

/// Whether the `n`th order (from 1) is one of `share` of them. `shift`, in
/// `[0, 1)`, moves the picked orders along, so that two faults with the same
/// share pick different orders (0 picks the `1/share`th order first, 0.5
/// the one half-way there).
pub fn picked(share: f64, n: u64, shift: f64) -> bool {
    if share <= 0.0 || n == 0 {
        return false;
    }
    let at = |n: u64| (n as f64 * share + shift).floor();
    at(n) > at(n - 1)
}

/// Checks that `share` of `key` is a share: in `[0, 1]`.
pub fn check_share(key: &str, share: f64) -> Result<(), SettingsError> {
    if (0.0..=1.0).contains(&share) {
        Ok(())
    } else {
        Err(SettingsError::invalid(
            key,
            share.to_string(),
            "must be a share of the orders, from 0 to 1",
        ))
    }
}

/// What became of the latest [`Latest::CAPACITY`] orders, by order id: an
/// order heard again (retried, duplicated, decided twice) is known by it,
/// and memory stays bounded (the oldest is forgotten).
#[derive(Debug)]
pub struct Latest<V> {
    values: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Default for Latest<V> {
    fn default() -> Self {
        Self {
            values: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Latest<V> {
    /// Orders remembered at most.
    pub const CAPACITY: usize = 10_000;

    /// What became of `order_id`, if it is remembered.
    pub fn get(&self, order_id: &str) -> Option<&V> {
        self.values.get(order_id)
    }

    /// Remembers `value` for `order_id` (a new one), forgetting the oldest
    /// at capacity.
    pub fn insert(&mut self, order_id: String, value: V) {
        if self.order.len() == Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.values.remove(&oldest);
        }
        self.order.push_back(order_id.clone());
        self.values.insert(order_id, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_picks_that_share_of_the_orders_evenly() {
        let picked_of = |share, shift| {
            (1..=1000)
                .filter(|&n| picked(share, n, shift))
                .collect::<Vec<u64>>()
        };
        let twentieth = picked_of(0.05, 0.0);
        assert_eq!(twentieth.len(), 50);
        assert_eq!(&twentieth[..3], &[20, 40, 60]);
        let shifted = picked_of(0.05, 0.5);
        assert_eq!(shifted.len(), 50);
        assert_eq!(&shifted[..3], &[10, 30, 50]);
        assert!(twentieth.iter().all(|n| !shifted.contains(n)));
        assert!(picked_of(0.0, 0.0).is_empty());
        assert_eq!(picked_of(1.0, 0.0).len(), 1000);
        assert!(check_share("faults.x", 0.5).is_ok());
        for bad in [-0.1, 1.5, f64::NAN] {
            assert!(check_share("faults.x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latest_forgets_the_oldest_at_capacity() {
        let mut latest = Latest::default();
        for n in 0..Latest::<u64>::CAPACITY as u64 + 5 {
            latest.insert(format!("o{n}"), n);
        }
        assert_eq!(latest.get("o4"), None);
        assert_eq!(latest.get("o5"), Some(&5));
        assert_eq!(latest.values.len(), Latest::<u64>::CAPACITY);
    }
}
