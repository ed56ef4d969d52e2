//! Tracked waves over NATS: how the emitting aether learns that nobody heard
//! a diffracting or reflectable wave.
//!
//! A NATS publisher is not told whether anyone listens, except through "no
//! responders": a message published with a reply subject that no
//! subscription matches comes back at once, on that reply subject, as an
//! empty message with status 503. So a tracked wave (one that diffracts or
//! reflects on failure) is published with the reply subject
//! `<prefix>._probe.<aether id>.<n>`, on which the aether's probe
//! subscription listens, and a clone of it (sharing its payload) is kept for
//! up to [`TRACK_FOR`] in a table of at most [`MAX_TRACKED`] waves. A 503
//! makes it bend to its parent channel (published again, tracked again) or,
//! at the end, come back to its source as a reflection. For a wave that was
//! heard nothing comes back, and its entry expires.
//!
//! The cost is for tracked waves only: one reply subject per publish, the
//! clone in the table, and a round trip to the server per bend. A 503 for a
//! wave no longer in the table (the table was full, or the answer came more
//! than 2 s late, as for a wave that waited longer in the outbox while the
//! connection was down) is counted as unrouted.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{Client, Message, StatusCode, Subscriber};
use futures_util::StreamExt;
use tokio::task::AbortHandle;

use super::{Shared, reflect, send};
use crate::{Channel, EmitError, EmitErrorKind, ReflectionReason, Wave, diffraction, subject};

/// The channel prefix of probe reply subjects.
pub(super) const PROBE_PREFIX: &str = "_probe";
/// Most tracked waves kept at once; past it the oldest is forgotten.
pub(super) const MAX_TRACKED: usize = 16_384;
/// How long a tracked wave is kept waiting for a "no responders".
pub(super) const TRACK_FOR: Duration = Duration::from_secs(2);

/// An aether's probe: its reply subscription and the waves it tracks.
pub(super) struct Probe {
    client: Client,
    shared: Arc<Shared>,
    /// `<prefix>._probe.<aether id>`.
    reply_prefix: String,
    next: AtomicU64,
    tracked: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    /// By token: the wave as published, and the channel it was emitted on.
    waves: HashMap<u64, (Wave, Channel)>,
    /// Tokens in the order they were published, with the time.
    order: VecDeque<(u64, Instant)>,
}

impl Probe {
    /// Subscribes to the aether's probe replies and starts the task that
    /// handles them.
    pub(super) async fn start(
        client: Client,
        shared: Arc<Shared>,
        aether_id: u64,
    ) -> Result<(Arc<Probe>, AbortHandle), EmitError> {
        let reply_prefix = format!("{}.{PROBE_PREFIX}.{aether_id:016x}", shared.prefix);
        let subscriber = client
            .subscribe(format!("{reply_prefix}.*"))
            .await
            .map_err(|e| EmitError::with_source(EmitErrorKind::Medium, e))?;
        let probe = Arc::new(Probe {
            client,
            shared,
            reply_prefix,
            next: AtomicU64::new(0),
            tracked: Mutex::new(Tracked::default()),
        });
        let task = tokio::spawn(listen(probe.clone(), subscriber));
        Ok((probe, task.abort_handle()))
    }

    fn lock(&self) -> MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a tracked wave, emitted on `emitted` (before any bend).
    pub(super) async fn publish(&self, wave: Wave, emitted: Channel) -> Result<(), EmitError> {
        let subject = subject::channel_subject(&self.shared.prefix, wave.channel());
        let body = self.shared.seal(&subject, &wave);
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.track(token, wave, emitted);
        let reply = format!("{}.{token}", self.reply_prefix);
        send(&self.client, &self.shared, subject, Some(reply), body).await
    }

    fn track(&self, token: u64, wave: Wave, emitted: Channel) {
        let now = Instant::now();
        let mut tracked = self.lock();
        while let Some(&(oldest, at)) = tracked.order.front() {
            if now.duration_since(at) < TRACK_FOR && tracked.order.len() < MAX_TRACKED {
                break;
            }
            tracked.order.pop_front();
            tracked.waves.remove(&oldest);
        }
        tracked.waves.insert(token, (wave, emitted));
        tracked.order.push_back((token, now));
    }

    /// Handles a message on a probe reply subject.
    async fn answer(&self, message: Message) {
        let token = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        let tracked = token.and_then(|t| self.lock().waves.remove(&t));
        if message.status != Some(StatusCode::NO_RESPONDERS) {
            // Someone answered on the reply subject: the wave was heard.
            return;
        }
        match tracked {
            Some((wave, emitted)) => self.unheard(wave, emitted).await,
            // Nobody heard a wave we no longer hold.
            None => self.shared.stats.unrouted(),
        }
    }

    /// Nobody heard `wave`: it bends, or comes back to its source.
    async fn unheard(&self, mut wave: Wave, emitted: Channel) {
        let stats = &*self.shared.stats;
        let failure = if wave.is_diffracting() {
            match diffraction::bend(&mut wave, &self.shared.config, stats) {
                Ok(()) => {
                    if let Err(error) = self.publish(wave, emitted).await {
                        tracing::warn!(%error, "could not emit a diffracted wave");
                    }
                    return;
                }
                Err(failure) => failure,
            }
        } else {
            stats.unrouted();
            ReflectionReason::NoResonator
        };
        if let Some(reflected) = wave.failed(failure, emitted)
            && let Err(error) = reflect(&self.client, &self.shared, reflected).await
        {
            tracing::warn!(%error, "could not send a reflection");
        }
    }
}

/// Handles the probe's replies until the aether closes.
async fn listen(probe: Arc<Probe>, mut subscriber: Subscriber) {
    while let Some(message) = subscriber.next().await {
        probe.answer(message).await;
    }
}
