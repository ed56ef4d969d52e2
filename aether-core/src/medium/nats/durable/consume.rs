//! The consuming side of durable channels: a pull consumer per durable
//! resonance moving stored waves into its receive queue, and the
//! acknowledgements kept until the vibrator hands each wave out (sent in
//! order by one task; `+WPI` for those a slow queue holds).

use super::*;

/// Ids of the waves a vibrator handed out last, to drop redeliveries.
const RECENT_IDS: usize = 16_384;
/// Most waves asked for in one pull.
const MAX_PULL_BATCH: usize = 256;
/// A consumer that hears neither a wave nor the server's idle heartbeat for
/// two of these pulls again, from whichever server leads it now (a pull
/// request dies with the server that led the consumer).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a consumer whose queue is full looks again.
const FULL_QUEUE_WAIT: Duration = Duration::from_millis(5);

/// One receive queue's durable waves.
#[derive(Default)]
pub(super) struct Handouts {
    /// Wave id -> the acknowledgement of its latest delivery, for the waves
    /// in the queue (or shed from it) and not handed out yet.
    pending: HashMap<u128, Waiting>,
    /// The ids it handed out last.
    taken: Recent<u128, RECENT_IDS>,
}

/// A delivery waiting in a queue: its acknowledgement, and the subject
/// that takes it.
struct Waiting {
    acker: Acker,
    reply: Option<async_nats::Subject>,
}

impl Durable {
    fn lock_handouts(&self) -> MutexGuard<'_, HashMap<u64, Handouts>> {
        // Every change is one insert or remove: a panic leaves it whole.
        self.handouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `kind` for a delivery, through the acknowledging task.
    fn acknowledge(&self, acker: Acker, kind: AckKind) {
        self.acks_in_flight.fetch_add(1, Ordering::AcqRel);
        if self.acks.send((acker, kind)).is_err() {
            self.acks_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether queue `inbox` handed out wave `id` already.
    fn handed_out(&self, inbox: u64, id: u128) -> bool {
        self.lock_handouts()
            .get(&inbox)
            .is_some_and(|h| h.taken.contains(&id))
    }

    /// Keeps the acknowledgement of wave `id`, about to be queued in
    /// `inbox` (of `capacity`), until the wave is handed out. Bounded: past
    /// twice the capacity and a pull batch, an acknowledgement is let go
    /// (its wave was shed, or comes again and is dropped at hand-out).
    fn expect(
        &self,
        inbox: u64,
        capacity: usize,
        id: u128,
        acker: Acker,
        reply: Option<async_nats::Subject>,
    ) {
        let mut handouts = self.lock_handouts();
        let pending = &mut handouts.entry(inbox).or_default().pending;
        pending.insert(id, Waiting { acker, reply });
        if pending.len() > 2 * capacity + MAX_PULL_BATCH
            && let Some(other) = pending.keys().copied().find(|other| *other != id)
        {
            pending.remove(&other);
        }
    }

    /// Queue `inbox` hands `wave` to its application: a durable wave is
    /// acknowledged now. `false` if it handed out this wave already.
    pub(in crate::medium::nats) fn hand_out(&self, inbox: u64, wave: &Wave) -> bool {
        if !self.is_durable(wave.channel()) {
            return true;
        }
        let id = wave.id().as_u128();
        let acker = {
            let mut handouts = self.lock_handouts();
            let handouts = handouts.entry(inbox).or_default();
            if !handouts.taken.insert(id) {
                return false;
            }
            handouts.pending.remove(&id)
        };
        if let Some(waiting) = acker {
            self.acknowledge(waiting.acker, AckKind::Ack);
        }
        true
    }

    /// The reply subjects of the deliveries waiting in the queues.
    fn waiting(&self) -> Vec<async_nats::Subject> {
        self.lock_handouts()
            .values()
            .flat_map(|h| h.pending.values())
            .filter_map(|w| w.reply.clone())
            .collect()
    }

    /// Queue `inbox` is gone: the waves it did not hand out are given back
    /// to the server at once (a negative acknowledgement), for the next
    /// resonance of that name.
    pub(in crate::medium::nats) fn release(&self, inbox: u64) {
        let Some(handouts) = self.lock_handouts().remove(&inbox) else {
            return;
        };
        for (_, waiting) in handouts.pending {
            self.acknowledge(waiting.acker, AckKind::Nak(None));
        }
    }

    /// Gets the durable consumer of `config`, or creates it. `recovering`:
    /// it was there before, so it is made again only if the server says it
    /// is gone; any other failure (a timeout while the cluster elects a
    /// leader) returns at once, to be tried again soon.
    async fn consumer(
        &self,
        config: &pull::Config,
        recovering: bool,
    ) -> Result<PullConsumer, ConsumerFailed> {
        let stream = &self.config.stream;
        let name = config.durable_name.clone().unwrap_or_default();
        // Looked up with a short timeout: after a failover it is asked
        // again soon, of whichever server leads it by then.
        match self
            .js_attempt
            .get_consumer_from_stream(&name, stream)
            .await
        {
            Ok(consumer) => return Ok(consumer),
            Err(e) if recovering && !is_missing(&e) => return Err(failed(e)),
            Err(_) => {}
        }
        match self
            .js
            .create_consumer_on_stream(config.clone(), stream)
            .await
        {
            Ok(consumer) => Ok(consumer),
            Err(first) => {
                // The stream may be missing (created by nobody yet, or the
                // server lost it): make it (if this program manages it) and
                // try once more.
                self.ready_stream().await.map_err(failed)?;
                self.js
                    .create_consumer_on_stream(config.clone(), stream)
                    .await
                    .map_err(|second| {
                        tracing::debug!(%first, "creating the durable consumer failed");
                        failed(second)
                    })
            }
        }
    }

    /// The settings of the durable consumer `name` on the subject `filter`,
    /// as every resonance makes its own.
    fn consumer_config(&self, name: String, filter: String, description: String) -> pull::Config {
        pull::Config {
            durable_name: Some(name),
            description: Some(description),
            filter_subject: filter,
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: match self.config.max_deliver {
                0 => -1,
                n => i64::from(n),
            },
            ..Default::default()
        }
    }

    /// Makes (or finds) each of `consumers`, for resonances of other users
    /// that may not make their own.
    pub(in crate::medium::nats) async fn make_consumers(
        &self,
        consumers: &[crate::config::DurableConsumer],
    ) -> Result<(), ConnectError> {
        for consumer in consumers {
            let config = self.consumer_config(
                consumer.name.clone(),
                consumer.filter.clone(),
                format!("aether consumer made for {}", consumer.name),
            );
            self.consumer(&config, false).await.map_err(|e| {
                ConnectError::new(
                    ConnectErrorKind::Config,
                    format!("durable consumer {}: {e}", consumer.name),
                )
            })?;
        }
        Ok(())
    }

    /// Resonates durably: a durable pull consumer on `pattern`'s subject,
    /// named after the vibrator (or `group`), whose waves a task moves into
    /// `inbox`. While connected, the consumer exists when this returns.
    pub(in crate::medium::nats) async fn subscribe(
        self: &Arc<Self>,
        shared: Arc<Shared>,
        id: SubscriptionId,
        pattern: Channel,
        inbox: Arc<Inbox>,
        group: Option<Arc<str>>,
    ) -> Result<AbortHandle, ResonateError> {
        let filter = subject::pattern_subject(&shared.prefix, &pattern);
        let grouped = group.is_some();
        let owner = group.as_deref().unwrap_or(inbox.name().as_str());
        let name = subject::durable_consumer_name(owner, grouped, &filter);
        let config = self.consumer_config(
            name,
            filter,
            format!(
                "aether {} {owner} on {}",
                if grouped { "group" } else { "vibrator" },
                pattern.as_str()
            ),
        );
        let first = if shared.counters.state() == ConnectionState::Connected {
            Some(
                self.consumer(&config, false)
                    .await
                    .map_err(|e| ResonateError::with_source(ResonateErrorKind::Medium, e))?,
            )
        } else {
            None
        };
        if !grouped {
            inbox.add_pattern(id, pattern);
        }
        let task = tokio::spawn(consume(
            self.clone(),
            shared,
            Resonance {
                inbox,
                id,
                grouped,
                last: LastChannel::default(),
            },
            config,
            first,
        ));
        Ok(task.abort_handle())
    }
}

/// The consumer could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the durable consumer: {0}")]
struct ConsumerFailed(String);

fn failed(e: impl std::fmt::Display) -> ConsumerFailed {
    ConsumerFailed(e.to_string())
}

/// The server says the consumer (or its stream) does not exist.
fn is_missing(e: &jetstream::stream::ConsumerError) -> bool {
    use jetstream::ErrorCode;
    matches!(
        e.kind(),
        jetstream::stream::ConsumerErrorKind::JetStream(error)
            if [ErrorCode::CONSUMER_NOT_FOUND, ErrorCode::STREAM_NOT_FOUND]
                .contains(&error.error_code())
    )
}

/// What a durable resonance's task keeps.
struct Resonance {
    inbox: Arc<Inbox>,
    id: SubscriptionId,
    grouped: bool,
    last: LastChannel,
}

/// Moves a durable consumer's waves into the receive queue, making the
/// consumer again (and the stream if needed) whenever it is lost.
async fn consume(
    durable: Arc<Durable>,
    shared: Arc<Shared>,
    mut resonance: Resonance,
    config: pull::Config,
    mut consumer: Option<PullConsumer>,
) {
    let mut delay = MIN_RETRY;
    loop {
        if resonance.inbox.is_closed() {
            return;
        }
        let current = match consumer.take() {
            Some(c) => c,
            None => match durable.consumer(&config, true).await {
                Ok(c) => c,
                Err(error) => {
                    tracing::debug!(%error, "durable consumer not ready; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                    continue;
                }
            },
        };
        let batch = resonance.inbox.capacity().clamp(1, MAX_PULL_BATCH);
        let messages = current
            .stream()
            .max_messages_per_batch(batch)
            // Short: a pull request outlives a client that died by up to
            // this long, and a subscriber of `*` elsewhere (a gateway) keeps
            // the dead client's inbox of interest, so the server may go on
            // delivering to it until then (each such wave comes again after
            // `ack_wait_ms`).
            .expires(Duration::from_secs(5))
            .heartbeat(HEARTBEAT)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(error) => {
                tracing::debug!(%error, "cannot pull from the durable consumer; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY);
                continue;
            }
        };
        tracing::debug!(consumer = ?config.durable_name, "pulling from the durable consumer");
        delay = MIN_RETRY;
        while let Some(item) = messages.next().await {
            match item {
                Ok(message) => {
                    if !arrive(&durable, &shared, &mut resonance, message).await {
                        return;
                    }
                }
                Err(error) => {
                    // A missed heartbeat (the server that led the consumer
                    // is gone, or the pull request with it), a failed pull,
                    // a deleted consumer: the consumer is looked up again
                    // and pulled from afresh. Waves delivered to the old
                    // pull and not taken come again after `ack_wait_ms`.
                    tracing::debug!(%error, "durable consumer; pulling again");
                    break;
                }
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// Takes one stored wave into the queue, its acknowledgement kept until
/// the vibrator hands the wave out; `false` once the vibrator is gone (the
/// wave is then left for redelivery). A message that is not for the queue
/// (refused, heard elsewhere, dropped by the checks) or whose wave the
/// vibrator handed out already is acknowledged at once.
async fn arrive(
    durable: &Durable,
    shared: &Shared,
    resonance: &mut Resonance,
    message: jetstream::Message,
) -> bool {
    let reply = message.reply.clone();
    let (message, acker) = message.split();
    let Resonance {
        inbox,
        id,
        grouped,
        last,
    } = resonance;
    let wave = take(shared, message, last, |channel| {
        inbox.heard_elsewhere(channel, *id, *grouped)
    })
    .map(|mut wave| {
        // A foreign client may send no id (0): such waves have no identity
        // to tell a redelivery by, so each delivery gets one of its own (at
        // least once, and possibly handed out twice), rather than all of
        // them sharing id 0 and the later ones taken for redeliveries.
        if wave.id() == WaveId::NIL {
            wave.set_id(WaveId::at_nanos(crate::wave::unix_nanos()));
        }
        wave
    });
    let Some(wave) = wave else {
        durable.acknowledge(acker, AckKind::Ack);
        return true;
    };
    if durable.handed_out(inbox.id(), wave.id().as_u128()) {
        // Handed out already: a redelivery, or a copy replayed into the
        // stream. Counted, and acknowledged so that it does not come again.
        inbox.stats().dropped(DropReason::Duplicate);
        shared.stats.dropped(DropReason::Duplicate);
        durable.acknowledge(acker, AckKind::Ack);
        return true;
    }
    // Wait for room rather than shed a stored wave.
    while inbox.len() >= inbox.capacity() && !inbox.is_closed() {
        tokio::time::sleep(FULL_QUEUE_WAIT).await;
    }
    let wave_id = wave.id().as_u128();
    // Kept before the offer: the vibrator may hand the wave out at once.
    durable.expect(inbox.id(), inbox.capacity(), wave_id, acker, reply);
    let delivered = offer_counted(inbox, wave, &shared.stats);
    let (queued, open) = (delivered.queued, delivered.open);
    if !queued && open && inbox.len() < inbox.capacity() {
        // Refused by the queue for good (noise floor, its own wave): done.
        // (Shed from a queue that filled meanwhile, it comes again.)
        let acker = durable
            .lock_handouts()
            .get_mut(&inbox.id())
            .and_then(|h| h.pending.remove(&wave_id));
        if let Some(waiting) = acker {
            durable.acknowledge(waiting.acker, AckKind::Ack);
        }
    }
    open
}

/// Every third of `ack_wait_ms`, tells the server that the deliveries
/// waiting in the queues are in progress (`+WPI`, JetStream's "working on
/// it"): each one's `ack_wait` starts again, so a queue read slowly is not
/// delivered a second time. (A wave handed out within the third is never
/// named. One still waiting in the client's pull for room in its queue is
/// not named: after `ack_wait` the server delivers it again, and the
/// process drops the copy it already handed out.)
pub(super) async fn keep_in_progress(durable: std::sync::Weak<Durable>) {
    let Some(every) = durable.upgrade().map(|d| d.config.ack_wait / 3) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(durable) = durable.upgrade() else {
            return;
        };
        for reply in durable.waiting() {
            if let Err(error) = durable
                .client
                .publish(reply, bytes::Bytes::from_static(IN_PROGRESS))
                .await
            {
                tracing::debug!(%error, "could not say a durable wave is in progress");
            }
        }
    }
}

/// JetStream's acknowledgement "in progress": the delivery's `ack_wait`
/// starts again.
const IN_PROGRESS: &[u8] = b"+WPI";

/// Sends acknowledgements in the order they come.
pub(super) async fn send_acks(
    mut acks: mpsc::UnboundedReceiver<(Acker, AckKind)>,
    in_flight: Arc<AtomicUsize>,
) {
    while let Some((acker, kind)) = acks.recv().await {
        if let Err(error) = acker.ack_with(kind).await {
            // Unacknowledged, it comes again after ack_wait, and the window
            // of recent ids drops it.
            tracing::debug!(%error, "could not acknowledge a durable wave");
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_stable_distinct_and_valid() {
        let a = subject::durable_consumer_name("billing.eu", false, "aether.orders.>");
        assert_eq!(
            a,
            subject::durable_consumer_name("billing.eu", false, "aether.orders.>")
        );
        assert!(a.starts_with("billing_eu-"), "{a}");
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(
            a,
            subject::durable_consumer_name("billing_eu", false, "aether.orders.>")
        );
        assert_ne!(
            a,
            subject::durable_consumer_name("billing.eu", true, "aether.orders.>")
        );
        assert_ne!(
            a,
            subject::durable_consumer_name("billing.eu", false, "aether.orders.*")
        );
    }
}
