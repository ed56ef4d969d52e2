//! Sending: this replica's changes as few messages as fit, hellos, the
//! buckets and own keys a peer lacks, rosters and asks to one member.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Shared {
    pub(in crate::state) async fn emit(
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
    pub(in crate::state) async fn queue_change(&self, key: SmolStr, entry: Entry) {
        let queued = {
            let mut outgoing = self.outgoing.lock().unwrap_or_else(|e| e.into_inner());
            if outgoing.capacity() == 0 {
                outgoing.reserve(self.last_taken.load(Ordering::Relaxed));
            }
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
            // Boxed: once in thousands of writes, and otherwise its state
            // would make every `set`'s future kilobytes to move.
            Box::pin(self.send_outgoing()).await;
        } else {
            // A writer in a loop leaves the runtime's other tasks (this
            // replica's among them) their turn, as a channel's sender does.
            tokio::task::consume_budget().await;
        }
    }

    /// Why the last send of this replica's changes failed, if it did (and
    /// none succeeded since).
    pub(in crate::state) fn send_failing(&self) -> Option<String> {
        if !self.sends_failing.load(Ordering::Acquire) {
            return None;
        }
        self.send_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends this replica's queued changes, as few messages as fit (a
    /// chunk within a receiver's limit of this writer for one second), in
    /// the order they were made.
    pub(in crate::state) async fn send_outgoing(&self) -> usize {
        let _one_at_a_time = self.sending.lock().await;
        let mut sent_in_all = 0;
        loop {
            let queued =
                std::mem::take(&mut *self.outgoing.lock().unwrap_or_else(|e| e.into_inner()));
            if queued.is_empty() {
                return sent_in_all;
            }
            self.last_taken.store(queued.len(), Ordering::Relaxed);
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
                self.sends_failing.store(sent.is_err(), Ordering::Release);
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

    pub(in crate::state) async fn say_goodbye(&self) {
        if !self.goodbye.swap(true, Ordering::AcqRel) {
            self.keep_coverage(true);
            self.hello(true).await;
        }
    }

    pub(in crate::state) async fn hello(&self, leaving: bool) {
        let message = Message::Hello {
            node: self.clock.node(),
            leaving,
            owned: self.lock_store().owned_fingerprint(&self.node_name),
        };
        if let Err(error) = self.emit(self.channels.presence.clone(), message).await {
            tracing::debug!(map = %self.map, %error, "could not say hello");
        }
    }

    /// Sends `node` the entries of `buckets` (node-owned keys aside), in
    /// chunks, the last of each bucket marked.
    pub(in crate::state) async fn send_buckets(&self, node: u64, buckets: &[u8]) {
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
    pub(in crate::state) async fn resend_own(&self, buckets: &[u8]) {
        let since = self
            .clock
            .wall()
            .saturating_sub(u64::try_from(RESEND_OWN_WITHIN.as_nanos()).unwrap_or(u64::MAX));
        let mut wanted = [false; store::BUCKETS];
        for &bucket in buckets {
            wanted[usize::from(bucket)] = true;
        }
        let own: Vec<(SmolStr, Entry)> = self
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
    pub(in crate::state) async fn send_entries(
        &self,
        node: u64,
        buckets: Vec<(u8, Vec<(SmolStr, Entry)>)>,
    ) {
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

    /// Sends `message` to the repair channel of replica `node`.
    pub(in crate::state) async fn send_to(&self, node: u64, message: Message) {
        if let Err(error) = self.emit(self.channels.repair_of(node), message).await {
            tracing::debug!(map = %self.map, %error, "could not send to a member");
        }
    }

    /// Asks the owner `node` (named `source`) for its keys if its
    /// fingerprint of them (`owned`) differs from what is here.
    pub(in crate::state) async fn compare_owned(&self, node: u64, source: &str, owned: u64) {
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
    pub(in crate::state) async fn send_roster(&self, node: u64) {
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

    /// Sends `node` the keys this replica owns (`node/<its name>/...`), as
    /// chunks of [`codec::OWN_KEYS`], the last marked.
    pub(in crate::state) async fn send_own_keys(&self, node: u64) {
        let mine = self.lock_store().owned_by(&self.node_name);
        if !mine.is_empty() {
            self.send_entries(node, vec![(codec::OWN_KEYS, mine)]).await;
        }
    }
}
