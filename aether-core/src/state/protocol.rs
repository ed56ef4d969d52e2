//! The replicas' protocol: taking in what peers send (changes, repairs,
//! digests, hellos, asks, holds), answering catch-ups and repairing by
//! anti-entropy, presence, and the replica's task that runs it all. The
//! payloads are in `codec.rs`, the merge in `store.rs`.

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
            peers: self.lock_peers().len(),
            ledger_failed: c.ledger_failed.load(Ordering::Relaxed),
        }
    }

    pub(super) fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_peers(&self) -> MutexGuard<'_, HashMap<u64, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_pending(&self) -> MutexGuard<'_, Option<(u64, HashSet<u8>)>> {
        self.pending_sync.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn refuse(&self, reason: Refusal) {
        self.counters.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
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

    /// Says goodbye to the peers, once.
    pub(super) async fn say_goodbye(&self) {
        if !self.goodbye.swap(true, Ordering::AcqRel) {
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
    pub(super) fn apply(&self, key: &str, entry: Entry, repair: bool, local: bool) -> Applied {
        let (stamp, writer, new) = (entry.stamp, entry.writer.clone(), entry.value.clone());
        let mut logged = None;
        let mut store = self.lock_store();
        let copy = self.ledger.as_ref().map(|ledger| (ledger, entry.clone()));
        let merged = store.merge(key, entry);
        if let (Merged::Applied(_), Some((ledger, entry))) = (&merged, copy) {
            let written = ledger.ledger().append(key, &entry, &store);
            if let Err(error) = &written {
                self.counters.ledger_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(map = %self.map, %error, "a change was not written to the ledger");
            }
            logged = Some(written.map_err(|e| e.to_string()));
        }
        let old = match merged {
            Merged::Applied(old) => old,
            Merged::Full(cap) => return Applied::Full(cap),
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
                    let _ = self.superseded.send(Superseded {
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
        let change = Change {
            key: key.to_string(),
            old: old.as_ref().and_then(|o| o.value.clone()),
            new,
            writer: writer.to_string(),
            stamp,
        };
        if let Some(old) = old
            && old.stamp.node == self.clock.node()
            && stamp.node != self.clock.node()
        {
            let _ = self.superseded.send(Superseded {
                key: key.to_string(),
                mine: old.stamp,
                by: change.clone(),
            });
        }
        let _ = self.changes.send(change);
        drop(store);
        Applied::Won(logged)
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
        let mut taken = Taken::default();
        let refuse = |taken: &mut Taken, reason: Refusal| {
            self.refuse(reason);
            taken.refused.get_or_insert(reason);
        };
        for (key, entry) in entries {
            if self.check_key(&key).is_err() {
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
            if self.clock.observe(entry.stamp).is_err() {
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
            match self.apply(&key, entry, repair, false) {
                Applied::Full(_) => refuse(&mut taken, Refusal::Full),
                Applied::Won(Some(Ok(seq))) => {
                    taken.logged = Some(taken.logged.map_or(seq, |s: u64| s.max(seq)));
                }
                Applied::Won(Some(Err(_))) => taken.not_logged = true,
                Applied::Won(None) | Applied::Stale => {}
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

    pub(super) fn note_peer(&self, node: u64, name: &str, leaving: bool) {
        let mut peers = self.lock_peers();
        if leaving {
            if let Some(peer) = peers.remove(&node) {
                let _ = self.presence.send(Presence::Left(peer.name.to_string()));
            }
            return;
        }
        let now = Instant::now();
        match peers.get_mut(&node) {
            Some(peer) => peer.seen = now,
            None => {
                // Bounded: a flood of made-up nodes cannot grow it forever.
                if peers.len() >= 4096 {
                    return;
                }
                peers.insert(
                    node,
                    Peer {
                        name: SmolStr::new(name),
                        seen: now,
                    },
                );
                let _ = self.presence.send(Presence::Joined(name.to_string()));
            }
        }
    }

    pub(super) fn expire_peers(&self) {
        let timeout = self.config.presence_timeout;
        let mut peers = self.lock_peers();
        let gone: Vec<u64> = peers
            .iter()
            .filter(|(_, p)| p.seen.elapsed() > timeout)
            .map(|(n, _)| *n)
            .collect();
        for node in gone {
            if let Some(peer) = peers.remove(&node) {
                let _ = self.presence.send(Presence::Left(peer.name.to_string()));
            }
        }
    }

    /// Handles one wave of the map's channels.
    pub(super) async fn handle(self: &Arc<Self>, vibrator: &Vibrator, wave: Wave) {
        let Some(source) = wave.source().map(str::to_string) else {
            self.refuse(Refusal::Malformed);
            return;
        };
        let message = match Message::decode(wave.payload_bytes().clone(), &self.limits) {
            Ok(message) => message,
            Err(_) => {
                self.refuse(Refusal::Malformed);
                return;
            }
        };
        let channel = wave.channel();
        let key = SmolStr::new(&source);
        // What makes this replica send (repairs, answers, asks) or is a
        // repair itself is limited per source, so that forged messages
        // cannot make it flood the bus.
        // (A hold is limited as the writer's changes are; an
        // acknowledgement makes this replica send nothing.)
        let chatty = !matches!(
            message,
            Message::Hello { .. }
                | Message::Changes { repair: None, .. }
                | Message::Hold { .. }
                | Message::Held { .. }
        );
        if chatty && self.chatter.check_key(&key).is_err() {
            self.refuse(Refusal::RateLimited);
            return;
        }
        match message {
            Message::Changes { repair, entries } => {
                let live = *channel == self.channels.changes && repair.is_none();
                let mine = *channel == self.channels.repair && repair.is_some();
                if !live && !mine {
                    self.refuse(Refusal::Malformed);
                    return;
                }
                // Live changes are limited per writer, entry by entry.
                if live {
                    let n = NonZeroU32::new(u32::try_from(entries.len()).unwrap_or(u32::MAX))
                        .unwrap_or(NonZeroU32::MIN);
                    if !matches!(self.writers.check_key_n(&key, n), Ok(Ok(_))) {
                        self.refuse(Refusal::RateLimited);
                        return;
                    }
                }
                // A repair chunk holds the keys of its bucket, or (the
                // sender's own keys) keys the sender owns.
                if let Some((bucket, _)) = repair
                    && entries.iter().any(|(k, _)| {
                        if bucket == codec::OWN_KEYS {
                            store::owner_of(k) != Some(source.as_str())
                        } else {
                            store::owner_of(k).is_some()
                                || store::bucket_of(k) != usize::from(bucket)
                        }
                    })
                {
                    self.refuse(Refusal::Malformed);
                    return;
                }
                let _ = self.take_entries(&source, entries, repair.is_some());
                if let Some((bucket, true)) = repair {
                    let mut pending = self.lock_pending();
                    note_last_chunk(&mut pending, bucket);
                    drop(pending);
                    self.synced.notify_waiters();
                }
            }
            Message::Digest { node, digest } => {
                let differing: Vec<u8> = self
                    .lock_store()
                    .digest()
                    .differing(&digest)
                    .into_iter()
                    .map(|b| b as u8)
                    .collect();
                if *channel == self.channels.sync {
                    // A catch-up: the answer lists the buckets that follow,
                    // and this replica's own keys (only it may send them)
                    // as one more.
                    let own = !self.lock_store().owned_by(&self.node_name).is_empty();
                    let mut listed = differing.clone();
                    if own {
                        listed.push(codec::OWN_KEYS);
                    }
                    let answer = Message::Sync {
                        node: self.clock.node(),
                        buckets: listed,
                    };
                    if let Err(error) = vibrator.reply(&wave, answer.encode()).await {
                        tracing::debug!(map = %self.map, %error, "could not answer a sync");
                        return;
                    }
                } else if *channel != self.channels.digest {
                    self.refuse(Refusal::Malformed);
                    return;
                } else if !self.is_peer(node, &source) {
                    // A periodic digest is answered only for a live peer of
                    // that name: nobody sends repairs to another's address.
                    return;
                }
                if !differing.is_empty() {
                    self.send_buckets(node, &differing).await;
                }
                if *channel == self.channels.sync {
                    self.send_own_keys(node).await;
                }
            }
            Message::Hello {
                node,
                leaving,
                owned,
            } => {
                if *channel != self.channels.presence {
                    self.refuse(Refusal::Malformed);
                    return;
                }
                let new = !self.lock_peers().contains_key(&node);
                self.note_peer(node, &source, leaving);
                if leaving {
                    return;
                }
                if new && self.may_hello_back() {
                    // Someone new: say hello back so it knows us soon.
                    self.hello(false).await;
                }
                // Its keys, as it holds them, differ from what is here: ask
                // it for them (only an owner sends its own keys).
                if self.lock_store().owned_fingerprint(&source) != owned
                    && self.may_ask(node, owned)
                {
                    let ask = Message::Ask {
                        node: self.clock.node(),
                    };
                    if let Err(error) = self.emit(self.channels.repair_of(node), ask).await {
                        tracing::debug!(map = %self.map, %error, "could not ask an owner");
                    }
                }
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
                if *channel != self.channels.repair {
                    self.refuse(Refusal::Malformed);
                    return;
                }
                self.take_held(&source, node, token, keeper, refused);
            }
            Message::Sync { .. } => self.refuse(Refusal::Malformed),
        }
    }

    /// Sends `node` the keys this replica owns (`node/<its name>/...`), as
    /// chunks of [`codec::OWN_KEYS`], the last marked.
    pub(super) async fn send_own_keys(&self, node: u64) {
        let mine = self.lock_store().owned_by(&self.node_name);
        if !mine.is_empty() {
            self.send_entries(node, vec![(codec::OWN_KEYS, mine)]).await;
        }
    }

    /// Whether `node` is a live peer named `name`.
    pub(super) fn is_peer(&self, node: u64, name: &str) -> bool {
        self.lock_peers()
            .get(&node)
            .is_some_and(|peer| peer.name == name)
    }

    /// At most one hello back a quarter of a heartbeat, however many
    /// newcomers (or made-up ones) say hello.
    pub(super) fn may_hello_back(&self) -> bool {
        let mut last = self
            .last_hello_back
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.config.heartbeat_interval / 4) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// At most one ask of an owner a heartbeat, and at most
    /// [`ASKS_PER_FINGERPRINT`] for one fingerprint it advertises: an owner
    /// that came back without some keys this replica still holds (they
    /// stay, as a departed owner's do) is not asked forever.
    pub(super) fn may_ask(&self, node: u64, advertised: u64) -> bool {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let heartbeat = self.config.heartbeat_interval;
        let count = match asked.get(&node) {
            Some((at, _, _)) if now.duration_since(*at) < heartbeat => return false,
            Some((_, fingerprint, n)) if *fingerprint == advertised => {
                if *n >= ASKS_PER_FINGERPRINT {
                    return false;
                }
                n + 1
            }
            _ => 1,
        };
        if asked.len() >= 4096 {
            asked.retain(|_, (at, _, _)| now.duration_since(*at) < heartbeat * 8);
        }
        asked.insert(node, (now, advertised, count));
        true
    }

    /// The periodic work: presence, anti-entropy, tombstone collection.
    pub(super) async fn tick(&self, heartbeat: bool, anti_entropy: bool) {
        if heartbeat {
            self.hello(false).await;
            self.expire_peers();
        }
        if anti_entropy {
            let collected = self.lock_store().collect(self.horizon());
            self.counters
                .collected
                .fetch_add(collected as u64, Ordering::Relaxed);
            self.writers.retain_recent();
            self.chatter.retain_recent();
            let digest = Message::Digest {
                node: self.clock.node(),
                digest: Box::new(self.lock_store().digest()),
            };
            if let Err(error) = self.emit(self.channels.digest.clone(), digest).await {
                tracing::debug!(map = %self.map, %error, "could not send the digest");
            }
        }
    }
}

/// The replica's task: takes in the map's waves and does the periodic
/// work, until the map is closed or dropped or the aether closes.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut vibrator: Vibrator,
    answering_now: tokio::sync::oneshot::Sender<()>,
) {
    let mut answering_now = Some(answering_now);
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat_interval);
    let mut anti_entropy = tokio::time::interval(shared.config.anti_entropy_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    anti_entropy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first ticks are at once: skip them (open says hello itself).
    heartbeat.tick().await;
    anti_entropy.tick().await;
    let mut answering = false;
    loop {
        if shared.stopped.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            _ = shared.ready.notified(), if !answering => {
                answering = true;
                if let Err(error) = vibrator.resonate_on(shared.channels.sync.clone()).await {
                    tracing::warn!(map = %shared.map, %error, "cannot answer catch-ups");
                }
                if let Some(tell) = answering_now.take() {
                    let _ = tell.send(());
                }
            }
            wave = vibrator.receive() => match wave {
                Some(wave) => shared.handle(&vibrator, wave).await,
                None => break,
            },
            _ = heartbeat.tick() => shared.tick(true, false).await,
            _ = anti_entropy.tick() => shared.tick(false, true).await,
            _ = shared.stop.notified() => {}
        }
    }
    // Dropped without close: still say goodbye, if the aether is open.
    shared.say_goodbye().await;
}
