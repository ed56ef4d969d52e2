//! Receiving: a wave of the map's channels decoded and handed to its
//! handler (changes, digests, hellos, probes, departures, rosters, holds),
//! and meeting the members that speak.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Shared {
    /// Tells the watchers of presence that `node` joined, if it did; a
    /// keeper tells a replica it meets that it is one, so that the
    /// replica's peers tell keepers apart.
    pub(in crate::state) async fn met(&self, node: u64, joined: Option<Presence>) {
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
    pub(in crate::state) fn tell(&self, presence: Option<Presence>) {
        if let Some(presence) = presence {
            self.presence.send(presence);
        }
    }

    /// Replica `node` named `source` said hello (or showed its presence) to
    /// all: it is there; a newcomer is checked, and met.
    pub(in crate::state) async fn spoke(&self, node: u64, source: &str, now: Instant) {
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

    /// Whether `source` is the replica this one catches up from, while it
    /// does (the first to answer it is).
    pub(in crate::state) fn is_answerer(&self, source: &str) -> bool {
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
    pub(in crate::state) async fn handle(self: &Arc<Self>, vibrator: &Vibrator, wave: Wave) {
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
        entries: Vec<(SmolStr, Entry)>,
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

    /// Whether `node` is a live member named `name`.
    pub(in crate::state) fn is_peer(&self, node: u64, name: &str) -> bool {
        self.lock_members().is(node, name)
    }

    /// The fingerprint of the keys this replica owns.
    pub(in crate::state) fn own_fingerprint(&self) -> u64 {
        self.lock_store().owned_fingerprint(&self.node_name)
    }
}
