//! The replicas' protocol: taking in what peers send (changes, repairs,
//! digests, hellos, probes, asks, holds), answering catch-ups and repairing
//! by anti-entropy with a few peers a round, and presence. The replica's
//! task that runs it all, with its periodic work, is in `task.rs`. The payloads are in `codec.rs`, the merge in
//! `store.rs`, who the members are in `members.rs`.

#[allow(clippy::wildcard_imports)]
use super::*;

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
    pub(super) fn lacks_refused(&self) -> bool {
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

    pub(super) async fn emit(
        &self,
        channel: Channel,
        message: Message,
    ) -> Result<(), crate::EmitError> {
        self.emitter
            .emit_own(Wave::new(channel, message.encode()))
            .await
            .map(|_| ())
    }

    /// Queues a change of this replica's for its task to send.
    pub(super) async fn queue_change(&self, key: String, entry: Entry) {
        let queued = {
            let mut outgoing = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
            outgoing.push((key, entry));
            outgoing.len()
        };
        // While the task gathers a stream it takes the queue by itself.
        if queued == 1 && !self.gathering.load(Ordering::Acquire) {
            self.send_due.notify_one();
        }
        if queued >= MAX_QUEUED_CHANGES {
            // A writer faster than its medium sends them itself: the queue
            // stays bounded, and the writer slows to what the medium takes.
            self.send_outgoing().await;
        } else {
            // A writer in a loop leaves the runtime's other tasks (this
            // replica's among them) their turn, as a channel's sender does.
            tokio::task::consume_budget().await;
        }
    }

    /// Why the last send of this replica's changes failed, if it did (and
    /// none succeeded since).
    pub(super) fn send_failing(&self) -> Option<String> {
        self.send_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends this replica's queued changes, as few messages as fit (a
    /// chunk within a receiver's limit of this writer for one second), in
    /// the order they were made.
    pub(super) async fn send_outgoing(&self) -> usize {
        let _one_at_a_time = self.sending.lock().await;
        let mut sent_in_all = 0;
        loop {
            let queued =
                std::mem::take(&mut *self.outgoing.lock().unwrap_or_else(|e| e.into_inner()));
            if queued.is_empty() {
                return sent_in_all;
            }
            sent_in_all += queued.len();
            let most = (self.config.max_writes_per_s as usize).clamp(1, codec::MAX_ENTRIES);
            for entries in super::held::chunks(queued, self.config.max_value_bytes, most) {
                let n = entries.len() as u64;
                let knock = self.knock_due().then(|| Message::Hold {
                    node: self.clock.node(),
                    token: codec::KNOCK_TOKEN,
                    entries: entries.clone(),
                });
                let message = Message::Changes {
                    repair: None,
                    entries,
                };
                let sent = self.emit(self.channels.changes.clone(), message).await;
                if let Some(knock) = knock
                    && let Err(error) = self.emit(self.channels.hold.clone(), knock).await
                {
                    tracing::debug!(map = %self.map, %error, "could not knock for a keeper");
                }
                let mut failed = self.send_failed.lock().unwrap_or_else(|e| e.into_inner());
                match sent {
                    Ok(()) => *failed = None,
                    Err(error) => {
                        // Held here: anti-entropy brings them to the peers.
                        self.counters.unsent.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(map = %self.map, %error, changes = n, "changes not sent; anti-entropy brings them to the peers");
                        *failed = Some(error.to_string());
                    }
                }
            }
        }
    }

    /// Whether this replica's next changes go to keepers too: it knows
    /// none (a keeper opens a map it writes to), and did not knock within
    /// a heartbeat.
    fn knock_due(&self) -> bool {
        if self.keeper || self.lock_members().knows_keeper() {
            return false;
        }
        let mut last = self.last_knock.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.config.heartbeat_interval) {
            return false;
        }
        *last = Some(now);
        true
    }

    pub(super) async fn say_goodbye(&self) {
        if !self.goodbye.swap(true, Ordering::AcqRel) {
            self.keep_coverage(true);
            self.hello(true).await;
        }
    }

    pub(super) async fn hello(&self, leaving: bool) {
        let message = Message::Hello {
            node: self.clock.node(),
            leaving,
            owned: self.lock_store().owned_fingerprint(&self.node_name),
        };
        if let Err(error) = self.emit(self.channels.presence.clone(), message).await {
            tracing::debug!(map = %self.map, %error, "could not say hello");
        }
    }

    /// Why a write of `key` does not fit: which cap, and how full.
    pub(super) fn full(&self, key: &str, cap: Cap) -> StateError {
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

    /// Merges one entry here (`repair`: brought by anti-entropy; `local`:
    /// this replica's own write) and tells watchers, and the writer if its
    /// write lost.
    ///
    /// The merge, the ledger record and the hand-over to watchers are one
    /// step under the store's lock: for every key, watchers get the changes
    /// in the order they were applied (strictly increasing stamps, each
    /// `old` the previous `new`), whichever tasks and peers wrote them.
    pub(super) fn apply(&self, key: String, entry: Entry, repair: bool, local: bool) -> Applied {
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
        let mut store = self.lock_store();
        let copy = self.ledger.as_ref().map(|ledger| (ledger, entry.clone()));
        let merged = match store.merge_owned(key, entry) {
            Ok(merged) => merged,
            Err(full) => return Applied::Full(full.cap, full.key),
        };
        let key = after.as_deref().unwrap_or_default();
        if let (Merged::Applied(_), Some((ledger, entry))) = (&merged, copy) {
            let written = ledger.ledger().append(key, &entry, &store);
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
        drop(store);
        Applied::Won(logged)
    }

    /// Appends again the changes the ledger could not write, if any; says
    /// so when they are all held again.
    pub(super) fn retry_unlogged(&self) {
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
    pub(super) fn horizon(&self) -> u64 {
        let horizon = u64::try_from(self.config.tombstone_horizon.as_nanos()).unwrap_or(u64::MAX);
        self.clock.wall().saturating_sub(horizon)
    }

    /// Takes in entries from `source` (the wave's source, checked by the
    /// aether's signatures where they are required): what was refused, and
    /// the ledger's part.
    pub(super) fn take_entries(
        &self,
        source: &str,
        entries: Vec<(String, Entry)>,
        repair: bool,
    ) -> Taken {
        let horizon = self.horizon();
        // The clock takes in the message's stamps at once, before any of
        // its entries applies (a write made here after one applied is
        // stamped above it); one further ahead than `max_drift` is refused
        // below.
        let latest = self.clock.observe_all(entries.iter().map(|(_, e)| e.stamp));
        let mut taken = Taken::default();
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
            match self.apply(key, entry, repair, false) {
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

    /// Sends `node` the entries of `buckets` (node-owned keys aside), in
    /// chunks, the last of each bucket marked.
    pub(super) async fn send_buckets(&self, node: u64, buckets: &[u8]) {
        let mut wanted = [false; store::BUCKETS];
        for &bucket in buckets {
            wanted[usize::from(bucket)] = true;
        }
        let mut grouped = self.lock_store().buckets(&wanted);
        let picked = buckets
            .iter()
            .map(|&b| (b, std::mem::take(&mut grouped[usize::from(b)])))
            .collect();
        self.send_entries(node, picked).await;
    }

    /// Sends this replica's own recent writes in `buckets` to every replica
    /// as live changes, at most once an anti-entropy interval: a digest
    /// that differs may show that the others never heard them (its
    /// messages were lost while it heard theirs), and a repair to one
    /// member at a time would take rounds to reach them all.
    pub(super) async fn resend_own(&self, buckets: &[u8]) {
        let since = self
            .clock
            .wall()
            .saturating_sub(u64::try_from(RESEND_OWN_WITHIN.as_nanos()).unwrap_or(u64::MAX));
        let mut wanted = [false; store::BUCKETS];
        for &bucket in buckets {
            wanted[usize::from(bucket)] = true;
        }
        let own: Vec<(String, Entry)> = self
            .lock_store()
            .buckets(&wanted)
            .into_iter()
            .flatten()
            .filter(|(_, e)| e.writer == self.node_name && e.stamp.physical_ns >= since)
            .collect();
        if own.is_empty() {
            return;
        }
        {
            let mut last = self.last_resend.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.config.anti_entropy_interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        for entries in super::held::chunks(own, self.config.max_value_bytes, codec::MAX_ENTRIES) {
            let message = Message::Changes {
                repair: None,
                entries,
            };
            if let Err(error) = self.emit(self.channels.changes.clone(), message).await {
                tracing::debug!(map = %self.map, %error, "could not send its own writes again");
                return;
            }
        }
    }

    /// Sends `node` each bucket's entries as repair chunks, the last of
    /// each bucket marked (what a catch-up counts).
    pub(super) async fn send_entries(&self, node: u64, buckets: Vec<(u8, Vec<(String, Entry)>)>) {
        let channel = self.channels.repair_of(node);
        for (bucket, entries) in buckets {
            let chunks =
                super::held::chunks(entries, self.config.max_value_bytes, codec::MAX_ENTRIES);
            let n = chunks.len();
            for (i, entries) in chunks.into_iter().enumerate() {
                let message = Message::Changes {
                    repair: Some((bucket, i + 1 == n)),
                    entries,
                };
                if let Err(error) = self.emit(channel.clone(), message).await {
                    tracing::debug!(map = %self.map, %error, "could not send a repair");
                    return;
                }
            }
        }
    }

    /// Tells the watchers of presence that `node` joined, if it did; a
    /// keeper tells a replica it meets that it is one, so that the
    /// replica's peers tell keepers apart.
    pub(super) async fn met(&self, node: u64, joined: Option<Presence>) {
        let new = joined.is_some();
        self.tell(joined);
        if new {
            // What it shows of this replica: its presence values.
            let all = self.lock_own_presence().all();
            if let Some(all) = all {
                self.send_presence(Some(node), all, true).await;
            }
        }
        if new && self.keeper {
            let said = Message::Held {
                node: self.clock.node(),
                token: codec::KEEPER_TOKEN,
                keeper: true,
                refused: codec::HELD_ALL,
            };
            self.send_to(node, said).await;
        }
    }

    /// Tells the watchers of presence, if anything changed.
    pub(super) fn tell(&self, presence: Option<Presence>) {
        if let Some(presence) = presence {
            self.presence.send(presence);
        }
    }

    /// Replica `node` named `source` said hello (or showed its presence) to
    /// all: it is there; a newcomer is checked, and met.
    pub(super) async fn spoke(&self, node: u64, source: &str, now: Instant) {
        let joined = {
            let mut members = self.lock_members();
            let joined = members.spoke(node, source, now);
            if joined.is_some() {
                members.check(node, now);
            }
            joined
        };
        self.met(node, joined).await;
    }

    /// Sends `message` to the repair channel of replica `node`.
    pub(super) async fn send_to(&self, node: u64, message: Message) {
        if let Err(error) = self.emit(self.channels.repair_of(node), message).await {
            tracing::debug!(map = %self.map, %error, "could not send to a member");
        }
    }

    /// Asks the owner `node` (named `source`) for its keys if its
    /// fingerprint of them (`owned`) differs from what is here.
    pub(super) async fn compare_owned(&self, node: u64, source: &str, owned: u64) {
        if self.lock_store().owned_fingerprint(source) != owned && self.may_ask(node, owned) {
            let ask = Message::Ask {
                node: self.clock.node(),
            };
            self.send_to(node, ask).await;
        }
    }

    /// Sends `node` the members this replica knows, itself among them,
    /// each with the fingerprint of its keys as held here (the newcomer
    /// asks the owners whose keys it lacks).
    pub(super) async fn send_roster(&self, node: u64) {
        let mut members = self.lock_members().roster();
        members.retain(|(n, _)| *n != node);
        members.push((self.clock.node(), self.node_name.clone()));
        let members: Vec<(u64, SmolStr, u64)> = {
            let store = self.lock_store();
            members
                .into_iter()
                .map(|(n, name)| {
                    let owned = store.owned_fingerprint(&name);
                    (n, name, owned)
                })
                .collect()
        };
        for chunk in members.chunks(codec::MAX_ROSTER) {
            let roster = Message::Roster {
                members: chunk.to_vec(),
            };
            self.send_to(node, roster).await;
        }
    }

    /// Whether `source` is the replica this one catches up from, while it
    /// does (the first to answer it is).
    pub(super) fn is_answerer(&self, source: &str) -> bool {
        let mut answerer = self.answerer.lock().unwrap_or_else(|e| e.into_inner());
        let (names, until) = &mut *answerer;
        if !until.is_some_and(|until| Instant::now() < until) {
            return false;
        }
        if names.is_empty() {
            names.push(SmolStr::new(source));
        }
        names.iter().any(|name| name == source)
    }

    /// Says (at most once a minute) that a replica speaks another version
    /// of the state payloads: its messages are refused as malformed, and
    /// the map does not converge with it.
    fn other_version(&self, source: &str, version: u8) {
        let mut warned = self
            .version_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                map = %self.map,
                source,
                version,
                ours = codec::VERSION,
                "a replica speaks another version of the state payloads: its messages are refused \
                 (counted as malformed) and the map does not converge with it; run one release on \
                 every replica of a map (said at most once a minute)"
            );
        }
    }

    /// Handles one wave of the map's channels.
    pub(super) async fn handle(self: &Arc<Self>, vibrator: &Vibrator, wave: Wave) {
        let Some(source) = wave.source().map(str::to_string) else {
            self.refuse(Refusal::Malformed);
            return;
        };
        let message = match Message::decode(wave.payload_bytes().clone(), &Limits::WIRE) {
            Ok(message) => message,
            Err(_) => {
                self.refuse(Refusal::Malformed);
                if let [b'A', b'S', version, ..] = wave.payload_bytes()[..]
                    && version != codec::VERSION
                {
                    self.other_version(&source, version);
                }
                return;
            }
        };
        // A peer heard (waves of this replica's own are not handed to it).
        self.heard.store(self.clock.wall(), Ordering::Relaxed);
        let channel = wave.channel();
        let key = SmolStr::new(&source);
        // What makes this replica send (repairs, answers, asks) or is a
        // repair itself is limited per source, so that forged messages
        // cannot make it flood the bus.
        // (A hold is limited as the writer's changes are; an
        // acknowledgement makes this replica send nothing.)
        // (A hello, an answer to a probe or a gone makes it send at most
        // one hello or ask, each limited by time.)
        let chatty = !matches!(
            message,
            Message::Hello { .. }
                | Message::Changes { repair: None, .. }
                | Message::Hold { .. }
                | Message::Held { .. }
                | Message::Ack { .. }
                | Message::Gone { .. }
        );
        if chatty && self.chatter.check_key(&key).is_err() {
            self.refuse(Refusal::RateLimited);
            return;
        }
        match message {
            Message::Changes { repair, entries } => {
                self.on_changes(&source, &key, channel, repair, entries)
                    .await
            }
            Message::Digest { node, digest } => {
                self.on_digest(vibrator, &wave, &source, node, &digest)
                    .await
            }
            Message::Hello {
                node,
                leaving,
                owned,
            } => self.on_hello(&source, channel, node, leaving, owned).await,
            Message::Ping { node, owned } => {
                self.on_probe(&source, channel, node, owned, false).await
            }
            Message::Ack { node, owned } => {
                self.on_probe(&source, channel, node, owned, true).await
            }
            Message::Gone { node } => self.on_gone(channel, node).await,
            Message::Roster { members } => self.on_roster(&source, channel, members).await,
            Message::Covers { since, .. } => {
                if *channel != self.channels.repair || !self.is_answerer(&source) {
                    self.refuse(Refusal::Malformed);
                    return;
                }
                self.lock_coverage().peer_since = Some(since);
            }
            Message::Ask { node } => {
                if *channel != self.channels.repair || !self.is_peer(node, &source) {
                    self.refuse(Refusal::Malformed);
                    return;
                }
                self.send_own_keys(node).await;
            }
            Message::Hold {
                node,
                token,
                entries,
            } => {
                if *channel != self.channels.hold {
                    self.refuse(Refusal::Malformed);
                    return;
                }
                self.take_hold(&source, node, token, entries).await;
            }
            Message::Held {
                node,
                token,
                keeper,
                refused,
            } => {
                self.on_held(&source, channel, node, token, keeper, refused)
                    .await
            }
            Message::Presence { node, full, values } => {
                self.on_presence(&source, channel, node, full, values).await
            }
            Message::Sync { .. } => self.refuse(Refusal::Malformed),
        }
    }

    /// Live changes, or a repair's chunk of one bucket.
    async fn on_changes(
        self: &Arc<Self>,
        source: &str,
        key: &SmolStr,
        channel: &Channel,
        repair: Option<(u8, bool)>,
        entries: Vec<(String, Entry)>,
    ) {
        let live = *channel == self.channels.changes && repair.is_none();
        let mine = *channel == self.channels.repair && repair.is_some();
        if !live && !mine {
            self.refuse(Refusal::Malformed);
            return;
        }
        // Live changes are limited per writer, entry by entry. A
        // message of more than this replica allows a writer in one
        // second (a writer with a higher limit of its own) takes
        // that many and refuses the rest: anti-entropy brings them.
        let mut entries = entries;
        if live {
            let n = NonZeroU32::new(u32::try_from(entries.len()).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN);
            let allowed = match self.writers.check_key_n(key, n) {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false,
                Err(governor::InsufficientCapacity(most)) => {
                    NonZeroU32::new(most).is_some_and(|most| {
                        let taken = matches!(self.writers.check_key_n(key, most), Ok(Ok(())));
                        if taken {
                            entries.truncate(most.get() as usize);
                            self.refuse(Refusal::RateLimited);
                        }
                        taken
                    })
                }
            };
            if !allowed {
                self.refuse(Refusal::RateLimited);
                return;
            }
        }
        // A repair chunk holds the keys of its bucket, or (the
        // sender's own keys) keys the sender owns.
        if let Some((bucket, _)) = repair
            && entries.iter().any(|(k, _)| {
                if bucket == codec::OWN_KEYS {
                    store::owner_of(k) != Some(source)
                } else {
                    store::owner_of(k).is_some() || store::bucket_of(k) != usize::from(bucket)
                }
            })
        {
            self.refuse(Refusal::Malformed);
            return;
        }
        if let Some((bucket, last)) = repair {
            self.note_for_return(source, bucket, &entries, last);
        }
        let _ = self.take_entries(source, entries, repair.is_some());
        if let Some((bucket, true)) = repair {
            let mut pending = self.lock_pending();
            note_last_chunk(&mut pending, bucket);
            drop(pending);
            self.synced.notify_waiters();
        }
    }

    /// A digest: a catch-up asked of this replica, or an anti-entropy
    /// round's probe.
    async fn on_digest(
        self: &Arc<Self>,
        vibrator: &Vibrator,
        wave: &Wave,
        source: &str,
        node: u64,
        digest: &store::Digest,
    ) {
        let channel = wave.channel();
        let differing: Vec<u8> = self
            .lock_store()
            .digest()
            .differing(digest)
            .into_iter()
            .map(|b| b as u8)
            .collect();
        // A catch-up comes to the map's group, or (asked again
        // after a replica that lacks writes) to this replica's
        // repair channel as a request.
        let catch_up = *channel == self.channels.sync
            || (*channel == self.channels.repair && wave.reply_to().is_some() && self.acknowledges);
        if catch_up {
            // A catch-up: the answer lists the buckets that follow,
            // and this replica's own keys (only it may send them)
            // as one more.
            let own = !self.lock_store().owned_by(&self.node_name).is_empty();
            let mut listed = differing.clone();
            if own {
                listed.push(codec::OWN_KEYS);
            }
            // A replica that refused writes as full says so: the
            // asker takes what it has and asks another (one of
            // the members it says first).
            let lacks = self.lacks_refused();
            if lacks {
                listed.push(codec::LACKS_WRITES);
            }
            let answer = Message::Sync {
                node: self.clock.node(),
                buckets: listed,
            };
            if let Err(error) = vibrator.reply(wave, answer.encode()).await {
                tracing::debug!(map = %self.map, %error, "could not answer a sync");
                return;
            }
            // Before the buckets, on the same channel.
            let covers = Message::Covers {
                node: self.clock.node(),
                since: self.lock_coverage().since,
            };
            self.send_to(node, covers).await;
            if lacks {
                self.send_roster(node).await;
            }
        } else if *channel != self.channels.repair {
            self.refuse(Refusal::Malformed);
            return;
        } else {
            // An anti-entropy round's digest is also a probe: it
            // is answered as a ping is.
            let ack = Message::Ack {
                node: self.clock.node(),
                owned: self.own_fingerprint(),
            };
            self.send_to(node, ack).await;
            // Back after more than the horizon: nothing offered
            // until it has caught up.
            if self.lock_coverage().returning.is_some() {
                return;
            }
            if !self.is_peer(node, source) || !self.may_repair(node) {
                // Repairs go only to a live member of that name
                // (nobody sends them to another's address), once
                // an anti-entropy interval at most (digests in its
                // name cannot make this replica send its map over
                // and over).
                return;
            }
        }
        if !differing.is_empty() {
            self.send_buckets(node, &differing).await;
            if !catch_up {
                self.resend_own(&differing).await;
                // Push-pull: the prober may hold what this replica lacks
                // (a replica nobody heard for a while holds its own
                // writes): this replica's digest goes back, and the
                // prober's answer brings them in the same exchange. Its
                // own digest back is not answered again (`may_repair`).
                let digest = Message::Digest {
                    node: self.clock.node(),
                    digest: Box::new(self.lock_store().digest()),
                };
                self.send_to(node, digest).await;
            }
        }
        if catch_up {
            self.send_own_keys(node).await;
            self.send_roster(node).await;
        }
    }

    /// A replica's hello, or its goodbye.
    async fn on_hello(
        self: &Arc<Self>,
        source: &str,
        channel: &Channel,
        node: u64,
        leaving: bool,
        owned: u64,
    ) {
        if *channel != self.channels.presence {
            self.refuse(Refusal::Malformed);
            return;
        }
        if node == self.clock.node() {
            // A goodbye in this replica's id while it is here (made
            // up by another): say hello to all, who take it back.
            if leaving && self.may_hello_back() {
                self.hello(false).await;
            }
            return;
        }
        let now = Instant::now();
        if leaving {
            let left = self.lock_members().left(node, now);
            self.gone(node, left);
            return;
        }
        self.spoke(node, source, now).await;
        // Its keys, as it holds them, differ from what is here: ask
        // it for them (only an owner sends its own keys).
        self.compare_owned(node, source, owned).await;
    }

    /// A probe of this replica, or the answer to its own.
    async fn on_probe(
        self: &Arc<Self>,
        source: &str,
        channel: &Channel,
        node: u64,
        owned: u64,
        is_ack: bool,
    ) {
        if *channel != self.channels.repair || node == self.clock.node() {
            self.refuse(Refusal::Malformed);
            return;
        }
        let joined = {
            let mut members = self.lock_members();
            let now = Instant::now();
            // An answer clears a check; a ping does not (anyone may
            // ping in a made-up id). Heard here alone: checked here,
            // so a made-up sender is gone a presence timeout later.
            let joined = if is_ack {
                members.heard(node, source, now)
            } else {
                members.spoke(node, source, now)
            };
            if joined.is_some() {
                members.check_alone(node, now);
            }
            joined
        };
        self.met(node, joined).await;
        if !is_ack {
            let ack = Message::Ack {
                node: self.clock.node(),
                owned: self.own_fingerprint(),
            };
            self.send_to(node, ack).await;
        }
        self.compare_owned(node, source, owned).await;
    }

    /// A replica said gone.
    async fn on_gone(self: &Arc<Self>, channel: &Channel, node: u64) {
        if *channel != self.channels.presence {
            self.refuse(Refusal::Malformed);
            return;
        }
        if node == self.clock.node() {
            // Said gone while here: say hello to all, who take it
            // back on its own word.
            if self.may_hello_back() {
                self.hello(false).await;
            }
            return;
        }
        let left = self.lock_members().left(node, Instant::now());
        self.gone(node, left);
    }

    /// The members the replica this one caught up from knows.
    async fn on_roster(
        self: &Arc<Self>,
        source: &str,
        channel: &Channel,
        members: Vec<(u64, SmolStr, u64)>,
    ) {
        if *channel != self.channels.repair {
            self.refuse(Refusal::Malformed);
            return;
        }
        // Only the replica this one caught up from gives it members,
        // while it catches up.
        if !self.is_answerer(source) {
            self.refuse(Refusal::Malformed);
            return;
        }
        let me = self.clock.node();
        let now = Instant::now();
        for (node, name, owned) in members {
            if node == me || !crate::names::is_name(&name) {
                continue;
            }
            let joined = self.lock_members().told(node, &name, now);
            self.met(node, joined).await;
            if owned != 0 && self.is_peer(node, &name) {
                self.compare_owned(node, &name, owned).await;
            }
        }
    }

    /// A replica holds the writes of a hold (or a keeper says what it
    /// is).
    async fn on_held(
        self: &Arc<Self>,
        source: &str,
        channel: &Channel,
        node: u64,
        token: u64,
        keeper: bool,
        refused: u8,
    ) {
        if *channel != self.channels.repair || node == self.clock.node() {
            self.refuse(Refusal::Malformed);
            return;
        }
        if keeper && token == codec::KEEPER_TOKEN && refused == codec::HELD_OPENING {
            // Not a member yet: its replica says hello once open. A
            // keeper's own replicas (their keeper hears their
            // hellos too) open from their disk and wait for none.
            if !self.keeper {
                self.keeper_opening.store(true, Ordering::Release);
            }
            return;
        }
        if keeper {
            // A keeper says so when it acknowledges, and to each
            // replica it meets (token 0, no hold's).
            let joined = {
                let mut members = self.lock_members();
                let joined = if token == codec::KEEPER_TOKEN {
                    let now = Instant::now();
                    let joined = members.spoke(node, source, now);
                    if joined.is_some() {
                        members.check_alone(node, now);
                    }
                    joined
                } else {
                    None
                };
                if members.is(node, source) {
                    members.keeps(node);
                }
                joined
            };
            self.tell(joined);
        }
        self.take_held(source, node, token, keeper, refused);
    }

    /// Sends `node` the keys this replica owns (`node/<its name>/...`), as
    /// chunks of [`codec::OWN_KEYS`], the last marked.
    pub(super) async fn send_own_keys(&self, node: u64) {
        let mine = self.lock_store().owned_by(&self.node_name);
        if !mine.is_empty() {
            self.send_entries(node, vec![(codec::OWN_KEYS, mine)]).await;
        }
    }

    /// Whether `node` is a live member named `name`.
    pub(super) fn is_peer(&self, node: u64, name: &str) -> bool {
        self.lock_members().is(node, name)
    }

    /// The fingerprint of the keys this replica owns.
    pub(super) fn own_fingerprint(&self) -> u64 {
        self.lock_store().owned_fingerprint(&self.node_name)
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
