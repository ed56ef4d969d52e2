//! The receive path of core subscriptions: each subscription's fan-out to
//! its receive queues, what it remembers of the last subject, and taking a
//! message (a frame or one envelope) apart into waves, checked.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The plain resonances of an aether on one subject.
#[derive(Default)]
pub(super) struct Fanouts {
    pub(super) by_subject: HashMap<String, Arc<Fanout>>,
    pub(super) by_member: HashMap<SubscriptionId, String>,
}

/// One NATS subscription and the receive queues it feeds.
pub(super) struct Fanout {
    pub(super) members: ArcSwap<Vec<(SubscriptionId, Arc<Inbox>)>>,
    /// Its key in [`arrivals`], whose removal unsubscribes.
    pub(super) key: std::sync::OnceLock<u64>,
}

/// What one subscription remembers of what it saw: the channel of the last
/// subject, so that messages on one subject (the common case) skip parsing
/// and validating it again, and, where signatures are required, the waves
/// it took (the replay window).
#[derive(Default)]
pub(super) struct LastChannel {
    pub(super) last: Option<(Subject, Channel)>,
    pub(super) replays: Option<Arc<Mutex<Replays>>>,
    /// A core NATS subscription (not a durable consumer's).
    pub(super) core: bool,
    /// The source name last decoded, checked once for a run of waves from
    /// one emitter.
    pub(super) sources: crate::wave::wire::SourceCache,
}

impl LastChannel {
    /// For a core NATS subscription. A durable consumer's is the
    /// `Default`: the stream redelivers what was not acknowledged, and its
    /// copies must not be refused as replays (the handed-out memory drops
    /// the ones already taken).
    pub(super) fn new(shared: &Shared) -> Self {
        Self::with_replays(
            shared
                .security
                .replay_window()
                .map(|r| Arc::new(Mutex::new(r))),
        )
    }

    /// For a core NATS subscription whose replay memory is `replays`.
    pub(super) fn with_replays(replays: Option<Arc<Mutex<Replays>>>) -> Self {
        Self {
            last: None,
            replays,
            core: true,
            sources: Default::default(),
        }
    }

    pub(super) fn resolve(&mut self, prefix: &str, subject: &Subject) -> Option<Channel> {
        if let Some((last, channel)) = &self.last
            && last == subject
        {
            return Some(channel.clone());
        }
        let channel = subject::subject_channel(prefix, subject)?;
        self.last = Some((subject.clone(), channel.clone()));
        Some(channel)
    }
}

/// Whether `channel` is a probe reply subject's.
pub(super) fn is_probe(channel: &Channel) -> bool {
    channel
        .as_str()
        .strip_prefix(PROBE_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// The wave a message carries, measured on arrival; `None` if it is not a
/// wave (counted as malformed; a batch frame is not taken here), is
/// `heard_elsewhere`, or is dropped (and counted). For durable consumers,
/// whose every message is acknowledged on its own.
pub(super) fn take(
    shared: &Shared,
    message: Message,
    last: &mut LastChannel,
    heard_elsewhere: impl FnMut(&Channel) -> bool,
) -> Option<Wave> {
    let channel = arrival(shared, &message, last, heard_elsewhere)?;
    take_envelope(
        shared,
        &message.subject,
        message.reply.as_ref(),
        channel,
        (&message.payload, 0..message.payload.len()),
        last,
    )
}

/// Every wave a message carries (one, or each of a batch frame's), each
/// checked and counted exactly as if it had come alone, handed to `each`.
/// A malformed frame is refused whole and counted once.
pub(super) fn take_each(
    shared: &Shared,
    message: Message,
    last: &mut LastChannel,
    heard_elsewhere: impl FnMut(&Channel) -> bool,
    mut each: impl FnMut(Wave),
) {
    let Some(channel) = arrival(shared, &message, last, heard_elsewhere) else {
        return;
    };
    let mut take_one = |range: std::ops::Range<usize>, channel: Channel| {
        let alone = copied_if_pinning(&message.payload, &range);
        let body = match &alone {
            Some(copy) => (copy, 0..copy.len()),
            None => (&message.payload, range),
        };
        if let Some(wave) = take_envelope(
            shared,
            &message.subject,
            message.reply.as_ref(),
            channel,
            body,
            last,
        ) {
            each(wave);
        }
    };
    if !wire::is_frame(&message.payload) {
        take_one(0..message.payload.len(), channel);
        return;
    }
    let envelopes = match crate::wave::wire::frame_ranges(&message.payload, &shared.limits) {
        Ok(envelopes) => envelopes,
        Err(error) => {
            shared.refuse(&message.subject, &error);
            return;
        }
    };
    shared
        .counters
        .frames_received
        .fetch_add(1, Ordering::Relaxed);
    for envelope in envelopes {
        take_one(envelope, channel.clone());
    }
}

/// A frame larger than this may hold a small wave that would pin it all.
pub(super) const PIN_LIMIT: usize = 64 * 1024;

/// The envelope at `range` of the frame `whole`, copied out when keeping
/// it as a slice would keep far more than itself alive: in a frame over
/// [`PIN_LIMIT`] bytes, an envelope under a quarter of it. A wave queued
/// (receive queues count waves, not bytes) then holds its own bytes, not
/// the frame's: a frame of junk around one small valid wave cannot pin a
/// megabyte per queued wave. Frames the batcher makes (at most
/// `nats.batch.max_bytes`, 64 KiB by default) are never copied.
pub(super) fn copied_if_pinning(
    whole: &bytes::Bytes,
    range: &std::ops::Range<usize>,
) -> Option<bytes::Bytes> {
    (whole.len() > PIN_LIMIT && range.len().saturating_mul(4) < whole.len())
        .then(|| bytes::Bytes::copy_from_slice(whole.get(range.clone()).unwrap_or_default()))
}

/// [`arrival_channel`], unless another of this vibrator's resonances
/// hears the channel too: the message is taken, checked and counted there,
/// once.
pub(super) fn arrival(
    shared: &Shared,
    message: &Message,
    last: &mut LastChannel,
    mut heard_elsewhere: impl FnMut(&Channel) -> bool,
) -> Option<Channel> {
    arrival_channel(shared, message, last).filter(|channel| !heard_elsewhere(channel))
}

/// The channel of a message's subject, if it is one of this aether's and
/// the message is a wave of the bus.
pub(super) fn arrival_channel(
    shared: &Shared,
    message: &Message,
    last: &mut LastChannel,
) -> Option<Channel> {
    // A subscription that hears clients' inboxes (`*`) hears NATS's own
    // traffic to them too: JetStream's deliveries to every consumer (a copy
    // of a stored message, which its publish brought already, under the
    // message's own subject, with an acknowledgement reply). Not a message
    // of the bus: passed over, not counted, whatever its subject, so that
    // a stored message counts once, not once more per consumer.
    if last.core
        && message
            .reply
            .as_ref()
            .is_some_and(|reply| reply.starts_with("$JS.ACK."))
    {
        return None;
    }
    // A durable aether's question of which streams capture its channels
    // (`captures.rs`): no wave, and no one's fault.
    if captures::is_probe(message) {
        return None;
    }
    let Some(channel) = last.resolve(&shared.prefix, &message.subject) else {
        shared.refuse(
            &message.subject,
            &"the subject is not a channel of this aether",
        );
        return None;
    };
    // And JetStream's API answers to a client's inbox: not waves either.
    if last.core
        && reply::is_reply_channel(&channel)
        && message.payload.first() != Some(&wire::MAGIC)
    {
        return None;
    }
    Some(channel)
}

/// One envelope off the wire (`body`: a range of a message on `subject`
/// with `reply`), measured on arrival; `None` if it is not a wave (counted as
/// malformed) or is dropped (and counted).
pub(super) fn take_envelope(
    shared: &Shared,
    subject: &Subject,
    reply: Option<&Subject>,
    channel: Channel,
    (whole, range): (&bytes::Bytes, std::ops::Range<usize>),
    last: &mut LastChannel,
) -> Option<Wave> {
    let envelope = whole.get(range.clone()).unwrap_or_default();
    let mut wave = match crate::wave::wire::decode_cached(
        channel,
        whole,
        range,
        &shared.limits,
        &mut last.sources,
    ) {
        Ok(wave) => wave,
        Err(error) => {
            shared.refuse(subject, &error);
            return None;
        }
    };
    // A reflection comes only on the reflection channel of the source it
    // names, and travels as the channel it was emitted on from here on, so
    // that the ACL judges that channel; nothing else comes on a reflection
    // channel.
    if !wave.arrived_rightly() {
        shared.stats.dropped(DropReason::Forged);
        return None;
    }
    wave.restore_reflected_channel();
    if shared.security.is_enabled()
        && let Err(reason) = shared.security.check_arrival(subject, envelope, &wave)
    {
        shared.stats.dropped(reason);
        return None;
    }
    // Sealed or not, every wave is asked: one sealed without a rule here
    // cannot be read either.
    if let Err(reason) = shared.security.open(subject, &mut wave) {
        shared.stats.dropped(reason);
        return None;
    }
    if let Some(replays) = &last.replays
        && !replays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&wave, crate::wave::unix_nanos())
    {
        shared.stats.dropped(DropReason::Replay);
        return None;
    }
    // A probe's reply subject is not a reply channel: a tracked wave is not
    // a request.
    if let Some(reply) = reply
        && let Some(reply_to) = subject::subject_channel(&shared.prefix, reply)
        && !is_probe(&reply_to)
    {
        wave.set_reply_to(reply_to);
    }
    if let Err(reason) = shared.life.judge(&mut wave, 0) {
        shared.stats.dropped(reason);
        return None;
    }
    Some(wave)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn a_small_wave_of_a_large_frame_is_copied_out_and_nothing_else_is() {
        let frame = bytes::Bytes::from(vec![7u8; 1 << 20]);
        // One small envelope of a megabyte frame: its own bytes only.
        let copy = copied_if_pinning(&frame, &(10..110)).expect("copied");
        assert_eq!((copy.len(), &copy[..]), (100, &frame[10..110]));
        assert!(!frame.as_ptr_range().contains(&copy.as_ptr()));
        // A large share of a large frame stays a slice.
        assert!(copied_if_pinning(&frame, &(0..(1 << 19))).is_none());
        // A frame the batcher makes (64 KiB by default) is never copied.
        let batch = frame.slice(..PIN_LIMIT);
        assert!(copied_if_pinning(&batch, &(0..100)).is_none());
    }
}
