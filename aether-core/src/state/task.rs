//! The replica's task: it takes in the map's waves, sends this replica's
//! writes (a stream gathered into few messages), and does the periodic
//! work (presence, anti-entropy, tombstone collection), with the limits on
//! how often it answers.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Shared {
    /// At most one hello to all a quarter of a heartbeat, however often
    /// this replica is said gone.
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

    /// Whether to answer a digest of member `node` with repairs: once an
    /// anti-entropy interval (half of one, so that a member's rounds are
    /// all answered) at most.
    pub(super) fn may_repair(&self, node: u64) -> bool {
        let mut repaired = self.repaired_for.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let every = self.config.anti_entropy_interval / 2;
        if repaired
            .get(&node)
            .is_some_and(|at| now.duration_since(*at) < every)
        {
            return false;
        }
        if repaired.len() >= members::MAX_MEMBERS {
            repaired.retain(|_, at| now.duration_since(*at) < every);
        }
        repaired.insert(node, now);
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
            self.keep_coverage(false);
            let (mut round, hello) = {
                let mut members = self.lock_members();
                let round = members.round(Instant::now(), self.config.presence_timeout);
                (round, members.says_hello())
            };
            for (node, name) in round.gone {
                self.gone(node, Some(Presence::Left(name.to_string())));
                let gone = Message::Gone { node };
                if let Err(error) = self.emit(self.channels.presence.clone(), gone).await {
                    tracing::debug!(map = %self.map, %error, "could not say a member is gone");
                }
            }
            if let Some(node) = round.probe
                && self.digest_due.swap(false, Ordering::AcqRel)
            {
                let digest = Message::Digest {
                    node: self.clock.node(),
                    digest: Box::new(self.lock_store().digest()),
                };
                self.send_to(node, digest).await;
            } else if let Some(node) = round.probe {
                round.ping.push(node);
            }
            if !round.ping.is_empty() {
                // One fingerprint for every ping of the round (a burst of
                // newcomers checked at once may be thousands).
                let owned = self.own_fingerprint();
                for node in round.ping {
                    let ping = Message::Ping {
                        node: self.clock.node(),
                        owned,
                    };
                    self.send_to(node, ping).await;
                }
            }
            if hello {
                self.hello(false).await;
                // Its presence values with it: a replica that missed a
                // change (plain waves are delivered at most once) has them
                // all again.
                let all = self.lock_own_presence().all();
                if let Some(all) = all {
                    self.send_presence(None, all, true).await;
                }
            }
        }
        if anti_entropy {
            let collected = self.lock_store().collect(self.horizon());
            self.counters
                .collected
                .fetch_add(collected as u64, Ordering::Relaxed);
            self.writers.retain_recent();
            self.chatter.retain_recent();
            // The next probe carries the digest: a pull from the member
            // probed, so that a difference anywhere reaches every replica
            // in a number of rounds that grows with the logarithm of the
            // map's replicas. Set to run more often than probes, it goes
            // to a member at random at once.
            let partner = if self.config.anti_entropy_interval >= self.config.heartbeat_interval {
                self.digest_due.store(true, Ordering::Release);
                None
            } else {
                self.lock_members().partner()
            };
            if let Some(node) = partner {
                let digest = Message::Digest {
                    node: self.clock.node(),
                    digest: Box::new(self.lock_store().digest()),
                };
                self.send_to(node, digest).await;
            }
        }
    }
}

/// Two wakes to send this close together: the writes are a stream. A
/// writer in a loop sets keys microseconds apart; one that waits for each
/// write to be seen elsewhere (a round trip, 100 us and more) is not a
/// stream, and a gathering (up to 2 ms with the timer's millisecond ticks)
/// would be its tail.
const STREAM_GAP: Duration = Duration::from_micros(50);

/// How long a stream's writes are gathered into one message at a time.
const GATHER: Duration = Duration::from_millis(1);

/// The group the replicas ready to answer catch-ups are in (one answers).
const CATCH_UP_GROUP: &str = "catchup";
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
    let mut last_wake: Option<tokio::time::Instant> = None;
    let mut gather_until: Option<tokio::time::Instant> = None;
    let mut presence_at: Option<tokio::time::Instant> = None;
    let mut presence_sent = tokio::time::Instant::now() - presence::PRESENCE_EVERY;
    loop {
        if shared.stopped.load(Ordering::Acquire) {
            break;
        }
        tokio::select! {
            _ = shared.ready.notified(), if !answering => {
                answering = true;
                // One replica of the group answers each catch-up; one that
                // will not stay is not of the group.
                if shared.acknowledges {
                    let answers = vibrator.resonate_in_group(shared.channels.sync.clone(), CATCH_UP_GROUP);
                    if let Err(error) = answers.await {
                        tracing::warn!(map = %shared.map, %error, "cannot answer catch-ups");
                    }
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
            _ = shared.send_due.notified() => {
                // Woken again within STREAM_GAP: a stream of writes. It is
                // gathered for GATHER at a time while it lasts (writers do
                // not wake the task meanwhile); a lone write leaves at once.
                let now = tokio::time::Instant::now();
                let streaming = last_wake.is_some_and(|at| now - at < STREAM_GAP);
                last_wake = Some(now);
                if streaming {
                    shared.gathering.store(true, Ordering::Release);
                    gather_until = Some(now + GATHER);
                } else {
                    shared.send_outgoing().await;
                }
            }
            _ = tokio::time::sleep_until(gather_until.unwrap_or_else(tokio::time::Instant::now)), if gather_until.is_some() => {
                if shared.send_outgoing().await > 1 {
                    gather_until = Some(tokio::time::Instant::now() + GATHER);
                } else {
                    // The stream ended: what came after the last take
                    // (with no wake) leaves now.
                    shared.gathering.store(false, Ordering::Release);
                    gather_until = None;
                    shared.send_outgoing().await;
                    last_wake = Some(tokio::time::Instant::now());
                }
            }
            () = shared.presence_due.notified(), if presence_at.is_none() => {
                // Changes close together leave together, at most every
                // PRESENCE_EVERY.
                presence_at = Some(presence_sent + presence::PRESENCE_EVERY);
            }
            () = tokio::time::sleep_until(presence_at.unwrap_or_else(tokio::time::Instant::now)), if presence_at.is_some() => {
                presence_at = None;
                presence_sent = tokio::time::Instant::now();
                shared.send_presence_changes().await;
            }
            _ = shared.stop.notified() => {}
        }
    }
    // Dropped without close: still send what was written and say goodbye,
    // if the aether is open.
    shared.send_outgoing().await;
    shared.say_goodbye().await;
}
