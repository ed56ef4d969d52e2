//! Durable channels over NATS: JetStream.
//!
//! With `[aether.durability] channels` set, the aether keeps one JetStream
//! stream (created or updated at connect) whose subjects are those
//! patterns' subjects. An emit on a durable channel is published through
//! JetStream with the wave id as `Nats-Msg-Id`, and returns once the
//! server acknowledged it (the wave is stored); if NATS cannot be reached
//! or does not acknowledge, the wave goes to the durable outbox
//! ([`crate::medium::disk_outbox`]), synced to disk when it has a directory, and a
//! task stores it when the connection is back. The stream drops a second
//! copy of an id within its duplicate window, so a resend is harmless.
//!
//! A resonance within a durable pattern reads through a durable pull
//! consumer named after the vibrator (or its group) and the subject, so a
//! restarted service resumes where it stopped. Waves go into the receive
//! queue as on the core path (the same decoding and arrival checks); the
//! consumer waits while the queue is full instead of shedding. Each wave is
//! acknowledged when the vibrator hands it to the application (`receive`,
//! `try_receive`, the stream): until then its acknowledgement waits in a
//! map of (queue, wave id), and a wave lost with the process, or shed from
//! a full queue, is delivered again after `ack_wait_ms`. The waves waiting
//! in a queue are said to be in progress to the server (`+WPI`) every third
//! of `ack_wait_ms`, so a queue that the application takes minutes to read
//! (a consumer slower than its producers, or shaped by a rate limit) is not
//! delivered again meanwhile. A wave whose id the
//! vibrator already handed out is not handed out twice (a bounded window of
//! recent ids per queue): a redelivery of it is acknowledged and dropped,
//! and a second copy in the queue is dropped at hand-out.
//!
//! Every other channel keeps the core NATS path, untouched: no headers.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::{
    Client,
    jetstream::{
        self, AckKind, Context,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::PublishErrorKind,
        message::{Acker, PublishMessage},
        stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
    },
};
use futures_util::StreamExt;
use tokio::{
    sync::{Notify, mpsc},
    task::AbortHandle,
};

mod capture_checks;
mod consume;
mod status;

use consume::{Handouts, keep_in_progress, send_acks};
pub(super) use status::stream_status_of;

use super::{LastChannel, Shared, take};
use crate::{
    Channel, ConnectError, ConnectErrorKind, DropReason, EmitError, EmitErrorKind, ResonateError,
    ResonateErrorKind, Wave, WaveId, channel,
    config::{DurabilityConfig, DurableStorage},
    connection::ConnectionState,
    inbox::Inbox,
    medium::{
        SubscriptionId,
        disk_outbox::{AppendError, DurableOutbox, Entry},
        offer_counted,
    },
    recent::Recent,
    subject,
};

/// Tries at making the stream when the server counts it twice (see
/// `Durable::ensure_stream`): 50 + 100 + 200 ms of pauses.
const STREAM_TRIES: u32 = 4;
/// How long a program starting waits for a stream whose servers are not
/// ready (a cluster that has just formed elects its leaders).
const STREAM_PATIENCE: Duration = Duration::from_secs(20);
/// Retry delays of the flusher and the consumers: short, as a cluster
/// elects a new leader within a second or two.
const MIN_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_millis(500);
/// How often an idle flusher reads the connection's state again.
const IDLE_LOOK: Duration = Duration::from_secs(2);
/// Longest wait for one JetStream answer while sending (a publish's
/// acknowledgement, the stream's look-up when the outbox is sent): short,
/// so that a request lost with a failed server is tried again at once on
/// the next, rather than after the whole request timeout. A resend is
/// harmless: the stream drops a second copy of a wave id.
pub(super) const ATTEMPT: Duration = Duration::from_secs(1);
/// How long the capture watcher waits for answers, and how often it asks.
const PROBE_WAIT: Duration = Duration::from_secs(2);
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// One error line per this many waves acknowledged from a wrong domain.
const WRONG_DOMAIN_WARN_EVERY: u64 = 1_000;
/// Most outbox waves sent before their acknowledgements are awaited: the
/// outbox drains at the stream's rate, not one round trip per wave.
const SEND_WINDOW: usize = 256;

/// The durable side of a NATS aether.
pub(super) struct Durable {
    /// JetStream with the aether's request timeout: the stream and the
    /// consumers, at connect.
    js: Context,
    /// JetStream with [`ATTEMPT`] for each answer: publishes, and the
    /// stream's look-up when the outbox is sent.
    js_attempt: Context,
    /// The stream was made ready (created, updated or checked) since the
    /// start; looked at again only when a publish says it is missing.
    stream_ready: std::sync::atomic::AtomicBool,
    /// The connection, for what the server says of its cluster.
    client: Client,
    config: DurabilityConfig,
    /// The durable patterns.
    patterns: Vec<Channel>,
    /// The stream's subjects: the patterns' subjects, without those another
    /// pattern covers.
    subjects: Vec<String>,
    outbox: Arc<DurableOutbox>,
    /// Wakes the flusher: a wave was put in the outbox.
    wake: Notify,
    /// The flusher's and the capture watcher's tasks.
    tasks: Mutex<Vec<AbortHandle>>,
    /// The acknowledgements waiting for their waves to be handed out, and
    /// what each queue handed out last, by queue.
    handouts: Mutex<HashMap<u64, Handouts>>,
    /// Acknowledgements to send, in order, by the acknowledging task.
    acks: mpsc::UnboundedSender<(Acker, AckKind)>,
    /// Acknowledgements given to that task and not yet sent.
    acks_in_flight: Arc<AtomicUsize>,
    acker: AbortHandle,
    /// Waves acknowledged by a stream of another domain than
    /// `durability.domain`.
    wrong_domain: std::sync::atomic::AtomicU64,
    /// Streams that answered the last capture probe, for the durable
    /// channel most answered for.
    captures: AtomicUsize,
}

impl Durable {
    /// Starts the durable side when durable channels are configured: opens
    /// the outbox (with what a previous process left in it), creates or
    /// updates the stream if the client is connected, and starts the
    /// flusher.
    pub(super) async fn start(
        client: &Client,
        shared: &Arc<Shared>,
    ) -> Result<Option<Arc<Self>>, ConnectError> {
        let config = &shared.config.durability;
        if !config.is_enabled() {
            return Ok(None);
        }
        let outbox = match &config.outbox_dir {
            None => DurableOutbox::in_memory(config.outbox_max_bytes),
            Some(dir) => {
                let (dir, max) = (dir.clone(), config.outbox_max_bytes);
                tokio::task::spawn_blocking(move || DurableOutbox::open(&dir, max))
                    .await
                    .map_err(|e| ConnectError::with_source(ConnectErrorKind::Config, e))?
                    .map_err(|e| {
                        ConnectError::new(
                            ConnectErrorKind::Config,
                            format!("durability.outbox_dir: cannot use the durable outbox: {e}"),
                        )
                    })?
            }
        };
        let patterns = config.patterns();
        let mut subjects = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            let covered = patterns.iter().enumerate().any(|(j, other)| {
                channel::covers(other, pattern) && (!channel::covers(pattern, other) || j < i)
            });
            if !covered {
                subjects.push(subject::pattern_subject(&shared.prefix, pattern));
            }
        }
        let context = |timeout: Duration| {
            let builder = jetstream::ContextBuilder::new().timeout(timeout);
            match &config.domain {
                Some(domain) => builder.domain(domain.as_str()).build(client.clone()),
                None => builder.build(client.clone()),
            }
        };
        let js = context(shared.config.request_timeout);
        let js_attempt = context(shared.config.request_timeout.min(ATTEMPT));
        let (acks, to_send) = mpsc::unbounded_channel();
        let acks_in_flight = Arc::new(AtomicUsize::new(0));
        let acker = tokio::spawn(send_acks(to_send, acks_in_flight.clone())).abort_handle();
        let durable = Arc::new(Self {
            js,
            js_attempt,
            stream_ready: std::sync::atomic::AtomicBool::new(false),
            client: client.clone(),
            config: config.clone(),
            patterns,
            subjects,
            outbox: Arc::new(outbox),
            wake: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            handouts: Mutex::new(HashMap::new()),
            acks,
            acks_in_flight,
            acker,
            wrong_domain: std::sync::atomic::AtomicU64::new(0),
            captures: AtomicUsize::new(0),
        });
        if shared.counters.state() == ConnectionState::Connected {
            durable.ready_stream().await.map_err(|e| {
                let advice = if durable.config.manage_stream {
                    "check that JetStream is enabled on the server, that this user may \
                     manage the stream (NatsPermissions::managing_stream), and, on a \
                     cluster that is starting, that it has elected its leaders (then start \
                     again)"
                } else {
                    "with durability.manage_stream = false the stream is made by the user \
                     that manages it (NatsPermissions::managing_stream): start that program \
                     first, or check that this user may look the stream up \
                     (NatsPermissions::with_jetstream)"
                };
                let domain = match &durable.config.domain {
                    Some(domain) => format!(
                        "; durability.domain = {domain:?}: check that a server of that \
                         domain is reachable from this one (a leaf node's link to its hub)"
                    ),
                    None => "; on a leaf node without JetStream of its own, set \
                             durability.domain to the hub's JetStream domain"
                        .to_string(),
                };
                // Still not ready after the wait: the servers, not the
                // settings.
                let patient =
                    durable.client.server_info().jetstream || durable.config.domain.is_some();
                let kind = if e.starting && patient {
                    ConnectErrorKind::Unreachable
                } else {
                    ConnectErrorKind::Config
                };
                ConnectError::new(
                    kind,
                    format!(
                        "cannot use the JetStream stream {:?} for durability.channels: {e}; {advice}{domain}",
                        durable.config.stream
                    ),
                )
            })?;
            durable.refuse_a_second_capture().await?;
        }
        let task = tokio::spawn(flush(durable.clone(), shared.clone()));
        let watcher = tokio::spawn(capture_checks::watch_captures(
            Arc::downgrade(&durable),
            shared.clone(),
        ));
        let progress = tokio::spawn(keep_in_progress(Arc::downgrade(&durable)));
        durable.lock_tasks().extend([
            task.abort_handle(),
            watcher.abort_handle(),
            progress.abort_handle(),
        ]);
        Ok(Some(durable))
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Vec<AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether waves on `channel` are durable. The bus's own channels
    /// (`_...`) never are.
    pub(super) fn is_durable(&self, channel: &Channel) -> bool {
        !channel.is_system() && self.patterns.iter().any(|p| channel.matches(p))
    }

    /// Whether a resonance on `pattern` reads durably: it lies within a
    /// durable pattern.
    pub(super) fn covers(&self, pattern: &Channel) -> bool {
        !pattern.is_system() && self.patterns.iter().any(|p| channel::covers(p, pattern))
    }

    /// Nothing waits in the durable outbox, and every acknowledgement of a
    /// wave handed out was given to the client.
    pub(super) fn is_idle(&self) -> bool {
        self.outbox.is_idle() && self.acks_in_flight.load(Ordering::Acquire) == 0
    }

    /// How many waves wait in the durable outbox.
    pub(super) fn pending(&self) -> usize {
        self.outbox.len()
    }

    /// The outbox's bytes and its bound.
    pub(super) fn pending_bytes(&self) -> (u64, u64) {
        self.outbox.bytes()
    }

    pub(super) fn stop(&self) {
        for task in self.lock_tasks().drain(..) {
            task.abort();
        }
        self.acker.abort();
    }

    /// The stream's replicas: as set; or as many as the cluster has
    /// servers (those the server told of at the last connect, with itself),
    /// up to 3, and never fewer than the stream has already: a client that
    /// connected while a node was down sees one server less, and must not
    /// take a copy away from a stream that has it.
    /// `None` when the stream's copies cannot be known now (the stream
    /// exists but does not answer: no quorum, a leader being elected): then
    /// nothing is changed, and the caller tries again later.
    async fn replicas(&self, js: &Context) -> Option<usize> {
        match self.config.replicas {
            // The servers this one knows are not the domain's.
            0 if self.config.domain.is_some() => match js.get_stream(&self.config.stream).await {
                Ok(stream) => Some(stream.cached_info().config.num_replicas),
                Err(e) => match e.kind() {
                    jetstream::context::GetStreamErrorKind::JetStream(error)
                        if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Some(1)
                    }
                    _ => None,
                },
            },
            0 => {
                let info = self.client.server_info();
                let servers: std::collections::HashSet<&String> =
                    info.connect_urls.iter().collect();
                let seen = servers.len().clamp(1, 3);
                match js.get_stream(&self.config.stream).await {
                    Ok(stream) => Some(seen.max(stream.cached_info().config.num_replicas)),
                    Err(e) => match e.kind() {
                        jetstream::context::GetStreamErrorKind::JetStream(error)
                            if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                        {
                            Some(seen)
                        }
                        _ => None,
                    },
                }
            }
            n => Some(n),
        }
    }

    /// The stream's state and limits, as the server reports them now
    /// (one look-up, bounded by [`ATTEMPT`]).
    pub(super) async fn stream_status(
        &self,
    ) -> Result<crate::connection::StreamStatus, ConnectError> {
        stream_status_of(&self.js, &self.config.stream).await
    }

    /// The stream, ready to store: created or updated to these settings
    /// when this program manages it, else looked up and checked to hold
    /// every durable channel of this program.
    ///
    /// A cluster that has just formed answers nothing, or "not available",
    /// while its JetStream elects its leaders: asked again for up to
    /// [`STREAM_PATIENCE`], said once. A server without JetStream (and no
    /// other domain named) is not waited for.
    async fn ready_stream(&self) -> Result<(), StreamNotReady> {
        if !self.client.server_info().jetstream && self.config.domain.is_none() {
            return self.ready_stream_with(&self.js).await;
        }
        let deadline = tokio::time::Instant::now() + STREAM_PATIENCE;
        let mut pause = Duration::from_millis(100);
        let mut said = false;
        loop {
            match self.ready_stream_with(&self.js_attempt).await {
                Err(error) if error.starting && tokio::time::Instant::now() + pause < deadline => {
                    if !said {
                        said = true;
                        tracing::info!(stream = %self.config.stream, %error, "the stream's servers are not ready (a cluster electing its leaders?): asking again for up to {} s", STREAM_PATIENCE.as_secs());
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                done => return done,
            }
        }
    }

    /// [`Durable::ready_stream`], each JetStream answer waited for as long
    /// as `js` says.
    async fn ready_stream_with(&self, js: &Context) -> Result<(), StreamNotReady> {
        self.check_stream(js).await?;
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// [`Durable::ready_stream`] unless it was made ready already and no
    /// publish said it is missing since: when the outbox is sent after a
    /// reconnect the stream is there (a cluster elects its leader on its
    /// own), and the first publish tells.
    ///
    /// Each answer is waited for [`ATTEMPT`] at most: while a cluster
    /// elects its leaders a request may go unanswered, and the next one,
    /// soon after, reaches the new ones.
    async fn ready_stream_once(&self) -> Result<(), StreamNotReady> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.ready_stream_with(&self.js_attempt).await
    }

    async fn check_stream(&self, js: &Context) -> Result<(), StreamNotReady> {
        if self.config.manage_stream {
            return self.ensure_stream(js).await.map_err(|e| StreamNotReady {
                starting: cluster_starting(&e),
                message: e.to_string(),
            });
        }
        let stream = js
            .get_stream(&self.config.stream)
            .await
            .map_err(|e| StreamNotReady {
                starting: matches!(e.kind(), jetstream::context::GetStreamErrorKind::Request),
                message: format!("cannot look it up: {e}"),
            })?;
        let held = &stream.cached_info().config.subjects;
        let missing: Vec<&String> = self
            .subjects
            .iter()
            .filter(|subject| {
                // Subjects read as patterns: `>` is the trailing wildcard.
                let wanted = Channel::new(subject.as_str());
                !held
                    .iter()
                    .any(|h| channel::covers(&Channel::new(h.as_str()), &wanted))
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StreamNotReady {
                starting: false,
                message: format!(
                    "it does not hold the subjects {missing:?} (it holds {held:?}); the user \
                     that manages it adds them"
                ),
            })
        }
    }

    /// Creates the stream, or updates it to these settings.
    async fn ensure_stream(
        &self,
        js: &Context,
    ) -> Result<(), jetstream::context::CreateStreamError> {
        let Some(replicas) = self.replicas(js).await else {
            return Err(jetstream::context::CreateStreamError::new(
                jetstream::context::CreateStreamErrorKind::TimedOut,
            ));
        };
        let c = &self.config;
        let config = stream::Config {
            name: c.stream.clone(),
            subjects: self.subjects.clone(),
            storage: match c.storage {
                DurableStorage::File => StorageType::File,
                DurableStorage::Memory => StorageType::Memory,
            },
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            duplicate_window: c.duplicate_window,
            max_age: c.max_age,
            max_bytes: if c.max_bytes == 0 {
                -1
            } else {
                c.max_bytes as i64
            },
            max_messages: -1,
            max_messages_per_subject: -1,
            max_consumers: -1,
            num_replicas: replicas,
            ..Default::default()
        };
        // Programs starting together each make the stream; while another
        // makes it the server can count it twice in its storage check, or
        // take it for another stream holding the same subjects (newer
        // servers), and refuse. The next try finds it made and updates it;
        // a refusal that lasts is returned.
        let mut pause = Duration::from_millis(50);
        for _ in 1..STREAM_TRIES {
            match js.create_or_update_stream(config.clone()).await {
                Err(error) if made_meanwhile(&error) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                made => return made.map(|_| ()),
            }
        }
        js.create_or_update_stream(config).await.map(|_| ())
    }

    /// Publishes `entry` through JetStream and waits for the server's
    /// acknowledgement.
    async fn store(&self, entry: &Entry) -> Result<(), jetstream::context::PublishError> {
        match self.store_in_order(std::slice::from_ref(entry)).await.error {
            None => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// Publishes `entries` one after the other without waiting, then
    /// awaits their acknowledgements in order: how many, from the first,
    /// the stream acknowledged, and the error that stopped the rest (those
    /// may be stored too; sent again, the stream drops the copies).
    async fn store_in_order(&self, entries: &[Entry]) -> Stored {
        let mut acks = Vec::with_capacity(entries.len());
        let mut error = None;
        for entry in entries {
            let publish = PublishMessage::build()
                .payload(entry.body.clone())
                .message_id(format!("{:032x}", entry.id));
            match self
                .js_attempt
                .send_publish(entry.subject.clone(), publish)
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let mut count = 0;
        for ack in acks {
            match ack.await {
                Ok(ack) => {
                    if ack.duplicate {
                        tracing::debug!(seq = ack.sequence, "JetStream already held this wave");
                    }
                    self.check_ack_domain(&ack);
                    count += 1;
                }
                Err(e) => {
                    if e.kind() == PublishErrorKind::StreamNotFound {
                        self.stream_ready.store(false, Ordering::Release);
                    }
                    error = Some(e);
                    break;
                }
            }
        }
        Stored { count, error }
    }

    /// Emits a wave on a durable channel: stored in JetStream, or kept in
    /// the durable outbox (on disk, synced, when it has a directory) until
    /// it can be. Returns once one of the two holds it.
    pub(super) async fn publish(&self, shared: &Shared, wave: &Wave) -> Result<(), EmitError> {
        let subject = subject::channel_subject(&shared.prefix, wave.channel());
        let body = shared.seal(&subject, wave);
        let entry = Entry {
            subject,
            id: wave.id().as_u128(),
            body,
        };
        if shared.counters.state() == ConnectionState::Connected && self.outbox.is_idle() {
            match self.store(&entry).await {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(EmitError::with_source(EmitErrorKind::Medium, e));
                }
                Err(error) => {
                    tracing::debug!(%error, "durable wave not acknowledged; keeping it in the outbox");
                }
            }
        }
        let outbox = self.outbox.clone();
        let appended = tokio::task::spawn_blocking(move || outbox.append(entry))
            .await
            .map_err(|e| EmitError::with_source(EmitErrorKind::Medium, e))?;
        match appended {
            Ok(()) => {}
            Err(AppendError::Full(bytes)) => {
                return Err(EmitError::new(
                    EmitErrorKind::OutboxFull,
                    format!(
                        "durable wave not stored: NATS does not acknowledge and the durable \
                         outbox holds {bytes} bytes already; retry later or raise \
                         durability.outbox_max_bytes"
                    ),
                ));
            }
            Err(e @ AppendError::Io { .. }) => {
                return Err(EmitError::with_source(EmitErrorKind::Medium, e));
            }
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// What [`Durable::store_in_order`] stored.
struct Stored {
    /// Entries acknowledged, from the first.
    count: usize,
    error: Option<jetstream::context::PublishError>,
}

/// The stream cannot be used now.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct StreamNotReady {
    message: String,
    /// Its servers did not answer, or said their cluster is not ready:
    /// asking again may do.
    starting: bool,
}

/// Sends the durable outbox, in order, whenever it holds waves and the
/// connection is up; forgets each wave once JetStream acknowledged it.
async fn flush(durable: Arc<Durable>, shared: Arc<Shared>) {
    let mut events = shared.events.subscribe();
    let mut delay = MIN_RETRY;
    // Since the first attempt the stream did not acknowledge, until one it
    // does.
    let mut stalled_since: Option<std::time::Instant> = None;
    loop {
        let connected = shared.counters.state() == ConnectionState::Connected;
        if durable.outbox.len() == 0 || !connected {
            tokio::select! {
                _ = durable.wake.notified() => {}
                _ = events.recv() => {}
                // The connection's state is read again now and then: an
                // event may be missed by a lagging receiver.
                _ = tokio::time::sleep(IDLE_LOOK) => {}
            }
            continue;
        }
        durable.outbox.set_flushing(true);
        let mut sent = 0usize;
        let mut failed = false;
        let attempt = std::time::Instant::now();
        match durable.ready_stream_once().await {
            Err(error) => {
                tracing::warn!(%error, waiting = durable.outbox.len(), retry_in = ?delay, "durable waves wait in the outbox until the stream answers (a retry: nothing is lost)");
                failed = true;
            }
            Ok(()) => loop {
                let window = durable.outbox.oldest(SEND_WINDOW);
                if window.is_empty() {
                    break;
                }
                let stored = durable.store_in_order(&window).await;
                if stored.count > 0
                    && let Some(since) = stalled_since.take()
                {
                    tracing::info!(
                        stalled_ms = since.elapsed().as_millis() as u64,
                        waiting = durable.outbox.len(),
                        "the stream acknowledges durable waves again"
                    );
                }
                if stored.count > 0 {
                    let outbox = durable.outbox.clone();
                    let count = stored.count;
                    let popped = tokio::task::spawn_blocking(move || {
                        (0..count).try_for_each(|_| outbox.pop_stored())
                    })
                    .await;
                    if let Ok(Err(error)) = popped {
                        // The waves stay stored; the next process may resend
                        // them, which the stream drops within its window.
                        tracing::warn!(%error, "could not mark a stored wave in the durable outbox");
                    }
                    sent += stored.count;
                }
                if let Some(error) = stored.error {
                    tracing::info!(%error, waiting = durable.outbox.len(), retry_in = ?delay, "durable waves wait in the outbox until the stream acknowledges them (a retry: nothing is lost)");
                    failed = true;
                    break;
                }
            },
        }
        durable.outbox.set_flushing(false);
        if sent > 0 {
            tracing::info!(sent, "durable outbox sent");
        }
        if failed {
            stalled_since.get_or_insert(attempt);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
        } else {
            delay = MIN_RETRY;
        }
    }
}

/// Whether the server did not answer, or said its cluster is not ready
/// yet (no leader, not enough peers): what a cluster starting answers.
fn cluster_starting(error: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::ErrorCode;
    match error.kind() {
        jetstream::context::CreateStreamErrorKind::TimedOut => true,
        jetstream::context::CreateStreamErrorKind::JetStream(error) => [
            ErrorCode::CLUSTER_NOT_AVAILABLE,
            ErrorCode::CLUSTER_INCOMPLETE,
            ErrorCode::CLUSTER_NO_PEERS,
            ErrorCode::CLUSTER_NOT_ACTIVE,
            ErrorCode::CLUSTER_NOT_ASSIGNED,
            ErrorCode::CLUSTER_NOT_LEADER,
        ]
        .contains(&error.error_code()),
        _ => false,
    }
}

/// A refusal the stream being made by another program at the same time
/// can cause: the next try tells.
fn made_meanwhile(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(error)
            if error.error_code() == jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED
                || error.error_code() == jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP
    )
}
