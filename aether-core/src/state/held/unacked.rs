//! This replica's writes that no replica acknowledged as a flush asks:
//! by key, those none acknowledged apart from those some did.

use std::collections::HashMap;

use smol_str::SmolStr;

use super::HeldBy;
use crate::state::{Stamp, store::Store};

/// This replica's writes a flush may yet have to send, by key: those no
/// replica acknowledged apart from those some did, so that a flush looks
/// over the first alone while each of the others is held as it asks (a
/// replica that wrote many keys does not look them all over at each
/// flush).
#[derive(Default)]
pub(in crate::state) struct Unacked {
    /// Acknowledged by none yet.
    pub(super) fresh: Keyed,
    /// Acknowledged by some.
    pub(super) some: Keyed,
    /// How many of `some` are held by how many (replicas, keepers): a
    /// few levels at most.
    pub(super) levels: Vec<((usize, usize), usize)>,
    /// Writes made: the keys held are compared with the writes kept once
    /// every [`LOOK_EVERY`] ([`Shared::wrote`](crate::state::Shared::wrote)).
    pub(super) writes: u64,
}

/// Writes kept past twice the keys held before those no longer in the map
/// are looked for ([`Unacked::forget_gone`]).
pub(in crate::state) const FORGET_AFTER: usize = 1024;

/// Writes between two comparisons of the writes kept with the keys held.
pub(super) const LOOK_EVERY: u64 = 256;

type Keyed = HashMap<SmolStr, Acked, foldhash::fast::RandomState>;

impl Unacked {
    /// A write of this replica won here: none acknowledged it yet.
    pub(in crate::state) fn wrote(&mut self, key: SmolStr, stamp: Stamp) {
        self.writes += 1;
        if !self.some.is_empty()
            && let Some(old) = self.some.remove(key.as_str())
        {
            count(&mut self.levels, &old, false);
        }
        let fresh = Acked {
            stamp,
            replicas: 0,
            keepers: 0,
        };
        self.fresh.insert(key, fresh);
    }

    pub(super) fn len(&self) -> usize {
        self.fresh.len() + self.some.len()
    }

    /// The writes that `want` asks more acknowledgements of.
    pub(super) fn short_of(&self, want: HeldBy) -> impl Iterator<Item = (&SmolStr, &Acked)> {
        let some_short = self
            .levels
            .iter()
            .any(|((replicas, keepers), _)| *replicas < want.replicas || *keepers < want.keepers);
        let some = some_short.then(|| {
            self.some.iter().filter(move |(_, acked)| {
                acked.replicas < want.replicas || acked.keepers < want.keepers
            })
        });
        self.fresh.iter().chain(some.into_iter().flatten())
    }

    /// Forgets `key`'s write.
    pub(super) fn remove(&mut self, key: &str) {
        if self.fresh.remove(key).is_none()
            && let Some(old) = self.some.remove(key)
        {
            count(&mut self.levels, &old, false);
        }
    }

    /// Forgets the writes no longer in `store` as this replica wrote them
    /// (overwritten by a higher stamp, a tombstone collected) once they may
    /// outnumber twice the keys held and [`FORGET_AFTER`]: writes still in
    /// the map are at most the keys held, so a look forgets at least half
    /// of what it looks at, and a replica that wrote many keys still held
    /// is never looked over for it.
    pub(super) fn forget_gone(&mut self, store: &Store) {
        if self.len() > 2 * store.held() + FORGET_AFTER {
            self.retain(|key, acked| store.entry(key).is_some_and(|e| e.stamp == acked.stamp));
        }
    }

    /// Keeps the writes `keep` says to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str, &Acked) -> bool) {
        self.fresh.retain(|key, acked| keep(key, acked));
        let levels = &mut self.levels;
        self.some.retain(|key, acked| {
            let kept = keep(key, acked);
            if !kept {
                count(levels, acked, false);
            }
            kept
        });
    }

    /// Notes that `replicas` replicas, `keepers` of them keepers, hold
    /// `key`'s write stamped `stamp` (unless written again since).
    pub(super) fn acknowledged(
        &mut self,
        key: &str,
        stamp: Stamp,
        replicas: usize,
        keepers: usize,
    ) {
        if replicas == 0 {
            return;
        }
        if self
            .fresh
            .get(key)
            .is_some_and(|acked| acked.stamp == stamp)
            && let Some((key, _)) = self.fresh.remove_entry(key)
        {
            let acked = Acked {
                stamp,
                replicas,
                keepers,
            };
            count(&mut self.levels, &acked, true);
            self.some.insert(key, acked);
        } else if let Some(acked) = self.some.get_mut(key)
            && acked.stamp == stamp
            && (replicas > acked.replicas || keepers > acked.keepers)
        {
            count(&mut self.levels, acked, false);
            acked.replicas = acked.replicas.max(replicas);
            acked.keepers = acked.keepers.max(keepers);
            count(&mut self.levels, acked, true);
        }
    }
}

/// Counts `acked` in (or out of) its level in `levels`.
fn count(levels: &mut Vec<((usize, usize), usize)>, acked: &Acked, add: bool) {
    let at = (acked.replicas, acked.keepers);
    match levels.iter().position(|(level, _)| *level == at) {
        Some(i) if add => levels[i].1 += 1,
        Some(i) => {
            levels[i].1 -= 1;
            if levels[i].1 == 0 {
                levels.swap_remove(i);
            }
        }
        None if add => levels.push((at, 1)),
        None => {}
    }
}

/// A write of this replica and the most replicas (and keepers) that
/// acknowledged it so far.
#[derive(Clone, Copy, Debug)]
pub(in crate::state) struct Acked {
    pub(in crate::state) stamp: Stamp,
    pub(in crate::state) replicas: usize,
    pub(in crate::state) keepers: usize,
}
