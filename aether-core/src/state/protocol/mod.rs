//! The replicas' protocol: taking in what peers send (changes, repairs,
//! digests, hellos, probes, asks, holds), answering catch-ups and repairing
//! by anti-entropy with a few peers a round, and presence. Here the
//! replica's shared parts (its counts, locks and refusals); in `apply.rs`
//! taking entries in, in `send.rs` what a replica sends, in `receive.rs`
//! the handlers of what it hears. The replica's task that runs it all,
//! with its periodic work, is in `task.rs`; the payloads are in
//! `codec.rs`, the merge in `store.rs`, who the members are in
//! `members.rs`.

#[allow(clippy::wildcard_imports)]
use super::*;

mod apply;
mod receive;
mod send;

impl crate::report::MapSource for Shared {
    fn map_report(&self) -> crate::report::MapReport {
        let stats = self.stats();
        crate::report::MapReport {
            map: self.map.clone(),
            node: self.node_name.to_string(),
            keys: stats.keys as u64,
            tombstones: stats.tombstones as u64,
            applied: stats.applied,
            refused: Refusal::ALL
                .iter()
                .filter(|r| stats.refused(**r) > 0)
                .map(|r| (r.as_str().to_string(), stats.refused(*r)))
                .collect(),
            repaired: stats.repaired,
            collected: stats.collected,
            peers: stats.peers as u64,
            watch_lagged: stats.watch_lagged,
            ledger_failed: stats.ledger_failed,
        }
    }
}

impl Shared {
    pub(super) fn stats(&self) -> StateStats {
        let c = &self.counters;
        let store = self.lock_store();
        StateStats {
            keys: store.len(),
            tombstones: store.tombstones(),
            applied: c.applied.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            refused: std::array::from_fn(|i| c.refused[i].load(Ordering::Relaxed)),
            repaired: c.repaired.load(Ordering::Relaxed),
            collected: c.collected.load(Ordering::Relaxed),
            watch_lagged: c.watch_lagged.load(Ordering::Relaxed),
            peers: self.lock_members().len(),
            ledger_failed: c.ledger_failed.load(Ordering::Relaxed),
            ledger_damaged: c.ledger_damaged.load(Ordering::Relaxed),
            unsent: c.unsent.load(Ordering::Relaxed),
        }
    }

    pub(super) fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_members(&self) -> MutexGuard<'_, members::Members> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_pending(&self) -> MutexGuard<'_, Option<(u64, HashSet<u8>)>> {
        self.pending_sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_coverage(&self) -> MutexGuard<'_, super::coverage::Coverage> {
        self.coverage.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn refuse(&self, reason: Refusal) {
        self.counters.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
        // A program's replica says what its clock keeps from it (a keeper
        // says it in its own summary), at most once a minute.
        if matches!(reason, Refusal::Future | Refusal::TooOld) && !self.keeper {
            let mut warned = self.clock_warned.lock().unwrap_or_else(|e| e.into_inner());
            if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                *warned = Some(Instant::now());
                let counted =
                    |r: Refusal| self.counters.refused[r as usize].load(Ordering::Relaxed);
                tracing::warn!(
                    map = %self.map,
                    future = counted(Refusal::Future),
                    too_old = counted(Refusal::TooOld),
                    "changes from other replicas refused for their stamps: more than max_drift \
                     ahead of the bus's time (future) or older than the tombstone horizon \
                     (too_old); this machine's clock or a writer's is off, or two buses that \
                     settled apart met (said at most once a minute; the refusals counted in \
                     stats' refused, a change offered again by repair counting again)"
                );
            }
        }
    }

    pub(super) fn check_key(&self, key: &str) -> Result<(), StateError> {
        if key.is_empty() || key.len() > self.config.max_key_bytes {
            return Err(StateError::new(
                StateErrorKind::InvalidKey,
                format!(
                    "a key of {} bytes; keys are 1 to max_key_bytes = {} bytes",
                    key.len(),
                    self.config.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_one();
        self.flushes.close();
    }
}

/// At most one warning a minute of changes the ledger could not write.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Writes refused as full remembered, so that one coming again (its
/// writer's hold) is not counted twice.
const FULL_REMEMBERED: usize = 1024;

/// The writes a replica refused as full, lately.
#[derive(Debug, Default)]
pub(super) struct FullRefused {
    seen: HashSet<(SmolStr, hlc::Stamp)>,
    /// More than [`FULL_REMEMBERED`] came: some refused are not listed.
    forgot: bool,
}

/// Changes queued to send past which a writer sends them itself.
const MAX_QUEUED_CHANGES: usize = 4 * codec::MAX_ENTRIES;
