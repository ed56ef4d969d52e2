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
mod status;

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

/// Ids of the waves a vibrator handed out last, to drop redeliveries.
const RECENT_IDS: usize = 16_384;
/// Tries at making the stream when the server counts it twice (see
/// `Durable::ensure_stream`): 50 + 100 + 200 ms of pauses.
const STREAM_TRIES: u32 = 4;
/// How long a program starting waits for a stream whose servers are not
/// ready (a cluster that has just formed elects its leaders).
const STREAM_PATIENCE: Duration = Duration::from_secs(20);
/// Most waves asked for in one pull.
const MAX_PULL_BATCH: usize = 256;
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
/// A consumer that hears neither a wave nor the server's idle heartbeat for
/// two of these pulls again, from whichever server leads it now (a pull
/// request dies with the server that led the consumer).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a consumer whose queue is full looks again.
const FULL_QUEUE_WAIT: Duration = Duration::from_millis(5);

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

/// One receive queue's durable waves.
#[derive(Default)]
struct Handouts {
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
    pub(super) fn hand_out(&self, inbox: u64, wave: &Wave) -> bool {
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
    pub(super) fn release(&self, inbox: u64) {
        let Some(handouts) = self.lock_handouts().remove(&inbox) else {
            return;
        };
        for (_, waiting) in handouts.pending {
            self.acknowledge(waiting.acker, AckKind::Nak(None));
        }
    }

    /// Creates the stream, or updates it to these settings.
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
    pub(super) async fn make_consumers(
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
    pub(super) async fn subscribe(
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
async fn keep_in_progress(durable: std::sync::Weak<Durable>) {
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
async fn send_acks(
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

/// A refusal the stream being made by another program at the same time
/// can cause: the next try tells.
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

fn made_meanwhile(error: &jetstream::context::CreateStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::CreateStreamErrorKind::JetStream(error)
            if error.error_code() == jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED
                || error.error_code() == jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP
    )
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
