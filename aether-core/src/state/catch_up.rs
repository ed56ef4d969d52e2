//! A replica's catch-up as it opens: one live peer (the group's pick)
//! sends what this replica lacks; a peer that lacks writes it refused as
//! full sends the asker to another member.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Shared {
    /// Asks a live peer for what this replica lacks and waits (up to
    /// `ready_timeout`) until it came. Alone on the bus: ready at once. A
    /// peer that says it lacks writes it refused as full is taken, and
    /// another member asked directly (up to [`LACKING_ASKS`]): it may hold
    /// them.
    pub(super) async fn catch_up(&self) {
        let timeout = self.config.ready_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        self.answerer.lock().unwrap_or_else(|e| e.into_inner()).1 =
            Some(Instant::now() + timeout * 2);
        // Members that answered as lacking writes, or not at all.
        let mut lacking: Vec<u64> = Vec::new();
        let mut member = None;
        loop {
            let reply = match member {
                None => self.ask_sync(deadline).await,
                Some(node) => self.ask_member(node, deadline).await,
            };
            let Some(reply) = reply else {
                if let Some(node) = member {
                    // Gone meanwhile: the next one.
                    lacking.push(node);
                    member = self.next_member(&lacking, deadline).await;
                    if member.is_some() && lacking.len() <= LACKING_ASKS {
                        continue;
                    }
                }
                return;
            };
            let Ok(Message::Sync { node, mut buckets }) =
                Message::decode(reply.payload_bytes().clone(), &Limits::WIRE)
            else {
                self.refuse(Refusal::Malformed);
                return;
            };
            let lacks = buckets.contains(&codec::LACKS_WRITES);
            buckets.retain(|&b| b != codec::LACKS_WRITES);
            if let Some(source) = reply.source() {
                let mut answerer = self.answerer.lock().unwrap_or_else(|e| e.into_inner());
                if !answerer.0.iter().any(|name| name == source) {
                    answerer.0.push(SmolStr::new(source));
                }
            }
            // (All of them may have come before the answer.)
            let waits = await_buckets(&mut self.lock_pending(), node, buckets);
            let whole = !waits
                || loop {
                    let notified = self.synced.notified();
                    if self
                        .lock_pending()
                        .as_ref()
                        .is_none_or(|(_, b)| b.is_empty())
                    {
                        break true;
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        tracing::warn!(map = %self.map, "a peer's state did not all come within ready_timeout; anti-entropy brings the rest");
                        break false;
                    }
                };
            *self.lock_pending() = None;
            if lacks && whole && lacking.len() < LACKING_ASKS {
                // Another member it knows (the one that answered said its
                // roster first), or the group again.
                lacking.push(node);
                member = self.next_member(&lacking, deadline).await;
                // What a returning replica drops is judged by one peer.
                if let Some(returning) = &mut self.lock_coverage().returning {
                    returning.received.clear();
                }
                continue;
            }
            if lacks {
                // It lacks what that one lacks, and says so in turn.
                self.caught_up_lacking.store(true, Ordering::Relaxed);
                tracing::info!(map = %self.map, "caught up from a replica that refused writes as full, and no other answered; anti-entropy brings what others hold");
            }
            self.lock_coverage().whole = whole && !lacks;
            if whole && !lacks {
                // Whole from a peer that lacks nothing: neither does this
                // one, unless its own ledger could not write.
                self.caught_up_lacking.store(false, Ordering::Relaxed);
                if let Some(ledger) = &self.ledger {
                    let mut ledger = ledger.ledger();
                    if ledger.unlogged() == 0 {
                        ledger.set_lacking(false);
                    }
                }
            }
            return;
        }
    }

    /// A member this replica knows, not among `asked`: a keeper (one that
    /// has not said so yet is waited for, a moment), else any.
    async fn next_member(&self, asked: &[u64], deadline: tokio::time::Instant) -> Option<u64> {
        let wait_until = (tokio::time::Instant::now() + KEEPER_WAIT).min(deadline);
        loop {
            let known: Vec<u64> = {
                let members = self.lock_members();
                let known: Vec<u64> = members
                    .roster()
                    .into_iter()
                    .map(|(node, _)| node)
                    .filter(|node| !asked.contains(node))
                    .collect();
                if let Some(keeper) = known.iter().copied().find(|&n| members.is_keeper(n)) {
                    return Some(keeper);
                }
                known
            };
            if tokio::time::Instant::now() >= wait_until {
                return known.first().copied();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A catch-up request, the same as to the map's group, to one member
    /// (on its repair channel): its answer, if it came in time (a member
    /// that will not stay answers none: an eighth of `ready_timeout`).
    async fn ask_member(&self, node: u64, deadline: tokio::time::Instant) -> Option<Wave> {
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(self.config.ready_timeout / 8);
        self.emitter
            .request_on(self.digest_wave(self.channels.repair_of(node)), left)
            .await
            .ok()
    }

    /// This replica's digest, to `channel`.
    fn digest_wave(&self, channel: Channel) -> Wave {
        Wave::new(
            channel,
            Message::Digest {
                node: self.clock.node(),
                digest: Box::new(self.lock_store().digest()),
            }
            .encode(),
        )
    }

    /// One catch-up request, asked again while no answer comes: the
    /// answer, or none (alone on the bus, or none came in time).
    async fn ask_sync(&self, deadline: tokio::time::Instant) -> Option<Wave> {
        let timeout = self.config.ready_timeout;
        let request = self.digest_wave(self.channels.sync.clone());
        // Asked again every eighth of the time while no answer came (six
        // more asks at most), each ask still awaited to the deadline (the
        // first answer is taken): the group member asked may be gone or
        // stuck (a replica closing, or stopped or killed with its
        // connection not yet dropped by the server), and each ask goes to
        // one at random.
        let mut asks = futures_util::stream::FuturesUnordered::new();
        let ask = || {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.emitter.request_on(request.clone(), left)
        };
        asks.push(ask());
        let mut again = std::iter::repeat_n(timeout / 8, 6);
        let mut next = again.next().map(|at| tokio::time::Instant::now() + at);
        // Over NATS the server may say no one listens while a member of the
        // group is a connection closing (a replica just closed or killed),
        // though another member is there: asked twice more, a moment
        // apart, before the bus is taken as empty of the map.
        const QUIET: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(150)];
        let mut quiet: &[Duration] = if self.emitter.aether().crosses_processes() {
            &QUIET
        } else {
            &[]
        };
        loop {
            tokio::select! {
                answer = futures_util::StreamExt::next(&mut asks), if !asks.is_empty() => match answer {
                    Some(Ok(reply)) => break Some(reply),
                    Some(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {
                        let pause = match quiet.split_first() {
                            Some((pause, rest)) => {
                                quiet = rest;
                                *pause
                            }
                            // A keeper opening the map from its disk answers
                            // in a moment: asked until the deadline.
                            None if self.keeper_opening.load(Ordering::Acquire) => OPENING_ASK_EVERY,
                            None => return None,
                        };
                        let at = tokio::time::Instant::now() + pause;
                        if at >= deadline {
                            tracing::warn!(map = %self.map, "a keeper opening the map did not answer within ready_timeout; going on with what this replica has");
                            return None;
                        }
                        tokio::time::sleep_until(at).await;
                        asks.push(ask());
                    }
                    Some(Err(_)) if next.is_some() || !asks.is_empty() => {}
                    Some(Err(e)) => {
                        // Alone (no peer heard): nothing was expected. With
                        // peers known, one should have answered.
                        if self.lock_members().len() == 0 {
                            tracing::info!(map = %self.map, "no peer answered; this replica starts from what it has");
                        } else {
                            tracing::warn!(map = %self.map, error = %e, "no peer gave its state; going on with what this replica has");
                        }
                        return None;
                    }
                    None => {}
                },
                _ = tokio::time::sleep_until(next.unwrap_or(deadline)), if next.is_some() => {
                    asks.push(ask());
                    next = again.next().map(|at| tokio::time::Instant::now() + at);
                }
            }
        }
    }
}

/// Replicas asked again by a catch-up whose answer came from one that
/// lacks writes it refused as full.
const LACKING_ASKS: usize = 3;

/// How long a catch-up that must ask another member waits for a keeper
/// to say it is one.
const KEEPER_WAIT: Duration = Duration::from_millis(200);

/// How often a catch-up asks again while a keeper opens the map.
const OPENING_ASK_EVERY: Duration = Duration::from_millis(100);
