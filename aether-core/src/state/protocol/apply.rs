//! Taking entries in: a merge under the store's lock with its ledger record
//! and the watchers told, the checks an entry from a peer passes first,
//! and the writes refused as full that a replica remembers.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How many of a message's entries are applied under one hold of the
/// store's lock.
const APPLY_RUN: usize = 64;

impl Shared {
    /// Why a write of `key` does not fit: which cap, and how full.
    pub(in crate::state) fn full(&self, key: &str, cap: Cap) -> StateError {
        let store = self.lock_store();
        let message = match cap {
            Cap::Keys => format!(
                "map {:?} holds {} keys (tombstones counted until collected); a write of a new key {key:?} is refused at max_keys = {}",
                self.map,
                store.held(),
                self.config.max_keys
            ),
            Cap::Bytes => format!(
                "map {:?} holds {} bytes; the write of {key:?} would take it past max_map_bytes = {}",
                self.map,
                store.bytes(),
                self.config.max_map_bytes
            ),
            Cap::Budget => {
                let (used, limit) = store.budget().map_or((0, 0), |b| (b.used(), b.limit()));
                format!(
                    "the maps its keeper keeps hold {used} bytes together; the write of {key:?} to map {:?} would take them past the keeper's max_bytes = {limit}",
                    self.map
                )
            }
        };
        StateError::new(StateErrorKind::Full, message)
    }

    /// Whether the write of `key` stamped `stamp` is refused as full for
    /// the first time here (the last [`FULL_REMEMBERED`] are remembered).
    /// From then on the replica's state lacks a write of the bus: it covers
    /// from now at the earliest.
    fn first_full(&self, key: &str, stamp: hlc::Stamp) -> bool {
        let mut refused = self.full_refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.seen.len() >= FULL_REMEMBERED {
            refused.seen.clear();
            refused.forgot = true;
        }
        let first = refused.seen.insert((SmolStr::new(key), stamp));
        drop(refused);
        if first {
            let mut coverage = self.lock_coverage();
            coverage.since = coverage.since.max(self.clock.wall());
        }
        first
    }

    /// Whether this replica lacks a write it refused as full (it holds
    /// neither it nor a later write of its key), or may (it forgot some),
    /// or lacks what it caught up from a lacking peer, or what its ledger
    /// could not write before it started again.
    pub(in crate::state) fn lacks_refused(&self) -> bool {
        if self.caught_up_lacking.load(Ordering::Relaxed) {
            return true;
        }
        let refused = self.full_refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.forgot {
            return true;
        }
        if refused.seen.is_empty() {
            return false;
        }
        let store = self.lock_store();
        refused
            .seen
            .iter()
            .any(|(key, stamp)| store.entry(key).is_none_or(|held| held.stamp < *stamp))
    }

    /// Merges one entry here (`repair`: brought by anti-entropy; `local`:
    /// this replica's own write) and tells watchers, and the writer if its
    /// write lost.
    ///
    /// The merge, the ledger record and the hand-over to watchers are one
    /// step under the store's lock: for every key, watchers get the changes
    /// in the order they were applied (strictly increasing stamps, each
    /// `old` the previous `new`), whichever tasks and peers wrote them.
    pub(in crate::state) fn apply(
        &self,
        key: SmolStr,
        entry: Entry,
        repair: bool,
        local: bool,
    ) -> Applied {
        let mut store = self.lock_store();
        self.apply_in(&mut store, key, entry, repair, local)
    }

    /// [`Shared::apply`] under the store's lock, taken already: a message's
    /// entries are applied a run at a time under one.
    fn apply_in(
        &self,
        store: &mut MutexGuard<'_, Store>,
        key: SmolStr,
        entry: Entry,
        repair: bool,
        local: bool,
    ) -> Applied {
        let stamp = entry.stamp;
        // What a change told to listeners needs of the entry, kept only if
        // someone listens.
        let listened = self.changes.receiver_count() > 0 || self.superseded.receiver_count() > 0;
        let kept = listened.then(|| (entry.writer.clone(), entry.value.clone()));
        // The key moves into the store: a copy only for what reads it
        // after the merge (the ledger, listeners, a writer told its write
        // lost).
        let after = (self.ledger.is_some() || listened || local).then(|| key.clone());
        let mut logged = None;
        let copy = self.ledger.as_ref().map(|ledger| (ledger, entry.clone()));
        let merged = match store.merge_owned(key, entry) {
            Ok(merged) => merged,
            Err(full) => return Applied::Full(full.cap, full.key),
        };
        let key = after.as_deref().unwrap_or_default();
        if let (Merged::Applied(_), Some((ledger, entry))) = (&merged, copy) {
            let written = ledger.ledger().append(key, &entry, store);
            if let Err(error) = &written {
                let failed = self.counters.ledger_failed.fetch_add(1, Ordering::Relaxed) + 1;
                // At most once a minute: a full disk fails every change.
                let mut warned = self.ledger_warned.lock().unwrap_or_else(|e| e.into_inner());
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    *warned = Some(Instant::now());
                    tracing::warn!(map = %self.map, %error, changes_not_written = failed, "changes were not written to the ledger (said at most once a minute; counted as ledger_failed)");
                }
            }
            logged = Some(written.map_err(|e| e.to_string()));
        }
        let old = match merged {
            Merged::Applied(old) => old,
            Merged::Stale => {
                self.counters.stale.fetch_add(1, Ordering::Relaxed);
                // A write of this replica that a higher stamp reached first
                // (a concurrent write, another replica's or this one's,
                // applied between its stamp and its merge): its `set`
                // returned, it was never applied, and its writer hears it.
                if local
                    && stamp.node == self.clock.node()
                    && let Some(held) = store.entry(key)
                {
                    self.superseded.send(Superseded {
                        key: key.to_string(),
                        mine: stamp,
                        by: Change {
                            key: key.to_string(),
                            old: None,
                            new: held.value.clone(),
                            writer: held.writer.to_string(),
                            stamp: held.stamp,
                        },
                    });
                }
                return Applied::Stale;
            }
        };
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        if repair {
            self.counters.repaired.fetch_add(1, Ordering::Relaxed);
        }
        let superseded = old
            .as_ref()
            .filter(|old| old.stamp.node == self.clock.node() && stamp.node != self.clock.node())
            .map(|old| old.stamp);
        // Made only for those who listen: watchers, or the writer whose
        // write this one superseded.
        let watched = self.changes.receiver_count() > 0;
        if let Some((writer, new)) = kept
            && (watched || (superseded.is_some() && self.superseded.receiver_count() > 0))
        {
            let change = Change {
                key: key.to_string(),
                old: old.and_then(|o| o.value),
                new,
                writer: writer.to_string(),
                stamp,
            };
            if let Some(mine) = superseded {
                self.superseded.send(Superseded {
                    key: key.to_string(),
                    mine,
                    by: change.clone(),
                });
            }
            if watched {
                self.changes.send(change);
            }
        }
        Applied::Won(logged)
    }

    /// Appends again the changes the ledger could not write, if any; says
    /// so when they are all held again.
    pub(in crate::state) fn retry_unlogged(&self) {
        let Some(ledger) = &self.ledger else {
            return;
        };
        let from_before = self.caught_up_lacking.load(Ordering::Relaxed);
        {
            let mut ledger = ledger.ledger();
            if ledger.unlogged() == 0 {
                // Everything written again (by an append since), and
                // nothing lacking from before this process: the ledger
                // lacks nothing.
                if !from_before {
                    ledger.set_lacking(false);
                }
                return;
            }
        }
        let store = self.lock_store();
        let mut ledger = ledger.ledger();
        let held = ledger.retry(&store);
        if ledger.unlogged() == 0 && !from_before {
            ledger.set_lacking(false);
        }
        if held > 0 && ledger.unlogged() == 0 {
            tracing::warn!(
                map = %self.map,
                changes = held,
                "the ledger holds again the changes it could not write"
            );
        }
    }

    /// The tombstone horizon now, Unix nanoseconds: tombstones stamped
    /// before it are collected, and changes stamped before it refused.
    pub(in crate::state) fn horizon(&self) -> u64 {
        let horizon = u64::try_from(self.config.tombstone_horizon.as_nanos()).unwrap_or(u64::MAX);
        self.clock.wall().saturating_sub(horizon)
    }

    /// Takes in entries from `source` (the wave's source, checked by the
    /// aether's signatures where they are required): what was refused, and
    /// the ledger's part.
    pub(in crate::state) fn take_entries(
        &self,
        source: &str,
        entries: Vec<(SmolStr, Entry)>,
        repair: bool,
    ) -> Taken {
        let horizon = self.horizon();
        // The clock takes in the message's stamps at once, before any of
        // its entries applies (a write made here after one applied is
        // stamped above it); one further ahead than `max_drift` is refused
        // below.
        let latest = self.clock.observe_all(entries.iter().map(|(_, e)| e.stamp));
        let mut taken = Taken::default();
        // The store's lock, held for a run of entries at most: a read or a
        // write of this replica waits for a run, not a whole message.
        let mut store: Option<MutexGuard<'_, Store>> = None;
        let mut run = 0;
        let refuse = |taken: &mut Taken, reason: Refusal| {
            self.refuse(reason);
            taken.refused.get_or_insert(reason);
        };
        for (key, entry) in entries {
            let value_ok = match (self.values, &entry.value) {
                (Some(check), Some(value)) => check(value),
                _ => true,
            };
            // The protocol's bound on keys (the decoder's), not this
            // replica's max_key_bytes, which bounds the writes made here.
            if key.is_empty() || key.len() > Limits::WIRE.max_key_bytes || !value_ok {
                refuse(&mut taken, Refusal::Malformed);
                continue;
            }
            // A node-owned key comes only from its owner, whether it wrote
            // it now or relays it in a repair.
            let writer_ok = match store::owner_of(&key) {
                Some(owner) => owner == source && entry.writer == source,
                None => repair || entry.writer == source,
            };
            if !writer_ok {
                refuse(&mut taken, Refusal::NotOwner);
                continue;
            }
            if entry.stamp.physical_ns > latest {
                refuse(&mut taken, Refusal::Future);
                continue;
            }
            // Before the horizon a tombstone may have been collected: a
            // live change that old could bring a key back. A repair's old
            // value is the survivor of that merge, and is taken.
            if entry.stamp.physical_ns < horizon && (!repair || entry.value.is_none()) {
                refuse(&mut taken, Refusal::TooOld);
                continue;
            }
            let stamp = entry.stamp;
            // Moved into the store: a copy where a ledger is asked of it.
            let held_key = self.ledger.as_ref().map(|_| key.clone());
            let locked = store.get_or_insert_with(|| self.lock_store());
            let applied = self.apply_in(locked, key, entry, repair, false);
            run += 1;
            // Let go before a refusal as full is remembered (its locks are
            // never taken under the store's).
            if run == APPLY_RUN || matches!(applied, Applied::Full(..)) {
                store = None;
                run = 0;
            }
            match applied {
                // A write comes twice (its live change, then its writer's
                // hold): counted once.
                Applied::Full(_, key) if !self.first_full(&key, stamp) => {
                    taken.refused.get_or_insert(Refusal::Full);
                }
                Applied::Full(..) => refuse(&mut taken, Refusal::Full),
                Applied::Won(Some(Ok(seq))) => {
                    taken.logged = Some(taken.logged.map_or(seq, |s: u64| s.max(seq)));
                }
                Applied::Won(Some(Err(_))) => taken.not_logged = true,
                // Held already (it came as a live change first, or a later
                // one won): held on the disk only if its append did not
                // fail.
                Applied::Stale => {
                    if let (Some(ledger), Some(key)) = (&self.ledger, &held_key)
                        && !ledger.ledger().holds(key)
                    {
                        taken.not_logged = true;
                    }
                }
                Applied::Won(None) => {}
            }
        }
        taken
    }
}
