//! The NATS medium: the same aether across processes and machines.
//!
//! One async-nats client (one connection, failing over between the cluster's
//! servers) per aether. An emit encodes the wave's envelope
//! ([`crate::wire`]) and publishes it on the channel's subject
//! ([`crate::subject`]); while disconnected it waits in the [`outbox`]. Each
//! resonance is a NATS subscription (a queue subscription for a group;
//! plain resonances on one subject share one), and one task per aether
//! moves every subscription's messages into the vibrators' receive queues,
//! in their emitters' order across subscriptions ([`arrivals`]): decoding,
//! measuring the wave on arrival, and counting what it refuses. The receive queue, not the client's buffer, is where a slow
//! vibrator sheds, weakest first; the client's buffer is sized so it only
//! absorbs bursts, and any drop there is counted as a slow-consumer event.
//! Requests use NATS request/reply (with the server's "no responders"), and
//! so do diffracting and reflectable waves, to learn that nobody heard them
//! ([`probe`]).

mod arrivals;
mod batch;
mod captures;
mod connect;
mod durable;
mod outbox;
mod probe;
mod receive;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use async_nats::{Client, ConnectOptions, Event, Message, Subject, connection::State};
use rustc_hash::FxHashMap;
use tokio::{
    sync::{Notify, broadcast},
    task::AbortHandle,
};

use self::{
    batch::Batcher,
    connect::*,
    outbox::Outbox,
    probe::{PROBE_PREFIX, Probe},
    receive::*,
};
use super::{Listener, SubscriptionId};
use crate::{
    AetherConfig, Channel, ConnectError, ConnectErrorKind, EmitError, EmitErrorKind, RequestError,
    RequestErrorKind, ResonateError, ResonateErrorKind, Wave,
    admission::Admitted,
    admission::Life,
    connection::{ConnectionCounters, ConnectionEvent, ConnectionState, ConnectionStatus},
    hopping::gate::HopGate,
    inbox::Inbox,
    reflection,
    replay::Replays,
    reply,
    security::Security,
    stats::{Counters, DropReason},
    subject, wire,
};

/// Waves refused off the wire are logged at most this often per aether.
const MALFORMED_LOG_EVERY: u64 = 1000;

pub(crate) struct NatsMedium {
    client: Client,
    shared: Arc<Shared>,
    /// Each subscription (whose end unsubscribes) and queue.
    subscriptions: Mutex<HashMap<SubscriptionId, (Handle, Arc<Inbox>)>>,
    /// Reads the core subscriptions, in emission order across them.
    arrivals: arrivals::Arrivals,
    /// Plain resonances on one subject share one NATS subscription.
    fanouts: Mutex<Fanouts>,
    next_id: AtomicU64,
    flusher: AbortHandle,
    /// This aether's id, in its probe reply subjects.
    id: u64,
    /// Started with the first tracked wave.
    probe: tokio::sync::OnceCell<(Arc<Probe>, AbortHandle)>,
    /// The subject of each channel emitted on, built once: a clone is a
    /// reference count, where building it costs two allocations per emit.
    subjects: ArcSwap<FxHashMap<Box<str>, Subject>>,
    /// Durable channels (JetStream), when configured.
    durable: Option<Arc<durable::Durable>>,
    /// Plain waves' queue to the connection, batched into frames
    /// (`[aether.nats.batch]`); none when batching is off.
    batcher: Option<Arc<Batcher>>,
}

/// What ends a subscription.
enum Handle {
    /// A durable consumer's task.
    Task(AbortHandle),
    /// A core subscription, read by [`arrivals`].
    Arrival(u64),
}

/// What [`NatsMedium::prepare`] made of a plain wave.
pub(crate) enum Prepared {
    /// Written into a batch frame: nothing left to do.
    Queued,
    /// Its subject and envelope, to hand to the client (or the batcher).
    Direct(Subject, bytes::Bytes),
}

/// Most channels whose subjects are kept; past it, subjects are built per
/// emit (an aether emitting on unbounded channel names stays bounded).
const MAX_CACHED_SUBJECTS: usize = 1024;

/// Ids of the NATS aethers of this process.
static NEXT_AETHER: AtomicU64 = AtomicU64::new(1);

/// What the connection's event handler, the flusher and the subscription
/// tasks share with the medium.
struct Shared {
    prefix: String,
    config: AetherConfig,
    /// The life rules of arriving waves, from `config`, made once.
    life: Life,
    limits: wire::Limits,
    /// The server's own largest message (`max_payload`, from its INFO at
    /// each connect); 0 until known.
    server_max_payload: Arc<std::sync::atomic::AtomicUsize>,
    stats: Arc<Counters>,
    counters: ConnectionCounters,
    events: broadcast::Sender<ConnectionEvent>,
    outbox: Outbox,
    wake_flusher: Notify,
    /// Signing keys and access rules.
    security: Arc<Security>,
    /// The replay memory of each group this aether resonates in, shared by
    /// its members here, while one lives.
    group_replays: Mutex<HashMap<Arc<str>, Weak<Mutex<Replays>>>>,
}

impl Shared {
    /// The replay memory of group `group` in this aether: the one its other
    /// members here use, or a fresh one (`None` where signatures are not
    /// required).
    fn group_replays(&self, group: &Arc<str>) -> Option<Arc<Mutex<Replays>>> {
        let mut groups = self.group_replays.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(memory) = groups.get(group).and_then(Weak::upgrade) {
            return Some(memory);
        }
        let memory = Arc::new(Mutex::new(self.security.replay_window()?));
        groups.retain(|_, memory| memory.strong_count() > 0);
        groups.insert(group.clone(), Arc::downgrade(&memory));
        Some(memory)
    }
}

impl NatsMedium {
    /// Makes the durable consumers named, as a resonance would make its
    /// own: for the stream's manager, when the programs may not make them.
    pub(crate) async fn make_durable_consumers(
        &self,
        consumers: &[crate::config::DurableConsumer],
    ) -> Result<(), ConnectError> {
        let Some(durable) = &self.durable else {
            return Err(ConnectError::new(
                ConnectErrorKind::Config,
                "no durable channel is configured ([aether.durability] channels)",
            ));
        };
        durable.make_consumers(consumers).await
    }

    /// The durable channels' stream, as the server reports it; without
    /// durable channels here, the stream `[aether.durability] stream`
    /// names, looked up only (in `domain` when set).
    pub(crate) async fn durable_stream(
        &self,
    ) -> Result<crate::connection::StreamStatus, ConnectError> {
        if let Some(durable) = &self.durable {
            return durable.stream_status().await;
        }
        let config = &self.shared.config.durability;
        let builder = async_nats::jetstream::ContextBuilder::new()
            .timeout(self.shared.config.request_timeout.min(durable::ATTEMPT));
        let js = match &config.domain {
            Some(domain) => builder.domain(domain.as_str()).build(self.client.clone()),
            None => builder.build(self.client.clone()),
        };
        durable::stream_status_of(&js, &config.stream).await
    }

    /// Connects to the servers of `config.nats`.
    pub(crate) async fn connect(
        config: &AetherConfig,
        stats: Arc<Counters>,
        security: Arc<Security>,
    ) -> Result<Self, ConnectError> {
        let nats = &config.nats;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            prefix: nats.subject_prefix.clone(),
            life: Life::of(config),
            config: config.clone(),
            limits: wire::Limits {
                max_body_bytes: nats.max_wave_bytes,
            },
            server_max_payload: Arc::default(),
            stats,
            counters: ConnectionCounters::default(),
            events,
            outbox: Outbox::new(nats.outbox_capacity),
            wake_flusher: Notify::new(),
            security,
            group_replays: Mutex::new(HashMap::new()),
        });
        shared.counters.set_state(ConnectionState::Disconnected);
        let servers = nats
            .urls
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConnectError::with_source(ConnectErrorKind::Config, e))?;
        let (addrs, first) =
            credentials_out_of_urls(servers.clone(), options(config, &shared).await?, &nats.auth);
        let client = match first.connect(addrs).await {
            Ok(client) => client,
            Err(e) => {
                let error = connect_error(&nats.redacted_urls(), e);
                // A program whose durable outbox is on disk starts during
                // an outage: what it emits waits there, and goes out when
                // a server answers. A refused password or TLS still stops
                // it (the first try told them apart).
                let Some(dir) = config
                    .durability
                    .outbox_dir
                    .as_ref()
                    .filter(|_| error.kind() == ConnectErrorKind::Unreachable)
                else {
                    return Err(error);
                };
                tracing::warn!(
                    %error,
                    outbox_dir = %dir.display(),
                    "no server reachable: starting all the same, with the durable outbox on \
                     disk; durable waves wait there (up to durability.outbox_max_bytes) and \
                     others in the outbox (nats.outbox_capacity), and go out once a server \
                     answers"
                );
                let (addrs, retrying) = credentials_out_of_urls(
                    servers,
                    options(config, &shared).await?.retry_on_initial_connect(),
                    &nats.auth,
                );
                retrying
                    .connect(addrs)
                    .await
                    .map_err(|e| connect_error(&nats.redacted_urls(), e))?
            }
        };
        if client.connection_state() == State::Connected {
            shared.counters.set_state(ConnectionState::Connected);
        }
        shared.note_server(&client);
        let durable = durable::Durable::start(&client, &shared).await?;
        let flusher = tokio::spawn(flush_on_reconnect(client.clone(), shared.clone()));
        let batcher = nats.batch.enabled.then(|| {
            Batcher::start(
                client.clone(),
                shared.clone(),
                &nats.batch,
                (nats.batch.max_bytes * 64).max(1 << 20),
                shared.server_max_payload.clone(),
            )
        });
        Ok(Self {
            batcher,
            client,
            arrivals: arrivals::Arrivals::start(shared.clone()),
            shared,
            subscriptions: Mutex::new(HashMap::new()),
            fanouts: Mutex::default(),
            next_id: AtomicU64::new(1),
            flusher: flusher.abort_handle(),
            id: (crate::wave::process_nonce() << 32)
                | (NEXT_AETHER.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF),
            probe: tokio::sync::OnceCell::new(),
            subjects: ArcSwap::default(),
            durable,
        })
    }

    pub(crate) fn status(&self) -> ConnectionStatus {
        let mut status = self.shared.counters.snapshot(self.shared.outbox.capacity());
        if let Some(durable) = &self.durable {
            status.durable_outbox_len = durable.pending();
            (status.durable_outbox_bytes, status.durable_outbox_max_bytes) =
                durable.pending_bytes();
            status.durable_captures = durable.captures();
        }
        status
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.shared.events.subscribe()
    }

    /// A vibrator (queue `inbox`) hands `wave` out: a durable wave is
    /// acknowledged; `false` for a copy of one it handed out already.
    pub(crate) fn hand_out(&self, inbox: u64, wave: &Wave) -> bool {
        self.durable
            .as_ref()
            .is_none_or(|d| d.hand_out(inbox, wave))
    }

    /// A vibrator (queue `inbox`) went away: what it did not hand out comes
    /// again.
    pub(crate) fn release(&self, inbox: u64) {
        if let Some(durable) = &self.durable {
            durable.release(inbox);
        }
    }

    /// Publishes an admitted wave, or keeps it in the outbox while the
    /// connection is down. A wave that diffracts or reflects is tracked
    /// ([`probe`]).
    pub(crate) async fn publish(&self, wave: &Wave) -> Result<(), EmitError> {
        match self.prepare(wave) {
            Some(Prepared::Queued) => return Ok(()),
            Some(Prepared::Direct(subject, body)) => {
                return self.publish_direct(subject, body).await;
            }
            None => {}
        }
        // The rare paths' futures are boxed, so that every emit's future
        // stays small (it is copied at each call). Each goes out after the
        // plain waves emitted before it (batch frames included), so that it
        // never overtakes them.
        if !self.batch_quiet() {
            Box::pin(self.after_batched()).await;
        }
        if let Some(durable) = &self.durable
            && durable.is_durable(wave.channel())
        {
            return Box::pin(durable.publish(&self.shared, wave)).await;
        }
        if wave.is_tracked() {
            return Box::pin(self.publish_tracked(wave.clone())).await;
        }
        let shared = &*self.shared;
        let subject = subject::channel_subject(&shared.prefix, wave.channel());
        let body = shared.seal(&subject, wave);
        Box::pin(send(&self.client, shared, subject, None, body)).await
    }

    /// The fast path's subject and envelope, for a plain wave (neither
    /// durable nor tracked) while connected with nothing waiting in the
    /// outbox: a cached subject and a pooled envelope. Worked out before
    /// anything waits, so that an emit then waits on the client with those
    /// alone: the wave, and the work done on it, are behind it. `None`:
    /// [`NatsMedium::publish`] takes another path.
    #[inline]
    pub(crate) fn prepare(&self, wave: &Wave) -> Option<Prepared> {
        let shared = &*self.shared;
        if wave.is_tracked()
            || self
                .durable
                .as_ref()
                .is_some_and(|d| d.is_durable(wave.channel()))
            || !shared.may_bypass_outbox()
        {
            return None;
        }
        // A payload near the largest message takes the path that measures
        // its envelope and refuses it when too large.
        if wave.payload_bytes().len() + NEAR_LIMIT > shared.max_message() {
            return None;
        }
        let version = shared.config.nats.wire_version;
        if shared.security.is_enabled() {
            let subject = self.subject_of(wave.channel());
            return Some(Prepared::Direct(
                subject.clone(),
                shared.seal(&subject, wave),
            ));
        }
        if let Some(batcher) = &self.batcher
            && batcher.try_push(|| self.subject_of(wave.channel()), version, wave)
        {
            return Some(Prepared::Queued);
        }
        let subject = self.subject_of(wave.channel());
        let body = crate::wave::wire::encode_pooled(version, wave);
        Some(Prepared::Direct(subject, body))
    }

    /// Hands the fast path's subject and envelope to the client.
    pub(crate) async fn publish_direct(
        &self,
        subject: Subject,
        body: bytes::Bytes,
    ) -> Result<(), EmitError> {
        self.shared.check_size(&body)?;
        if let Some(batcher) = &self.batcher {
            return batcher.send(subject, body).await;
        }
        self.client
            .publish(subject, body)
            .await
            .map_err(|e| EmitError::with_source(EmitErrorKind::Medium, e))
    }

    /// No plain wave waits in the batch queue.
    fn batch_quiet(&self) -> bool {
        self.batcher.as_ref().is_none_or(|b| b.is_quiet())
    }

    /// Returns once the plain waves queued for batch frames so far are with
    /// the client: what is sent next on another path (a request, a durable
    /// or tracked wave) follows them on the connection.
    #[cold]
    async fn after_batched(&self) {
        if let Some(batcher) = &self.batcher {
            batcher.drained().await;
        }
    }

    /// The subject of `channel`, from the cache when it is there.
    fn subject_of(&self, channel: &Channel) -> Subject {
        let cached = self.subjects.load();
        if let Some(subject) = cached.get(channel.as_str()) {
            return subject.clone();
        }
        let subject = Subject::from(subject::channel_subject(&self.shared.prefix, channel));
        // Reply, probe, reflection and hop channels (`_...`) change all the
        // time: caching them would only churn the map.
        if !channel.is_system() && cached.len() < MAX_CACHED_SUBJECTS {
            self.subjects.rcu(|cached| {
                let mut cached = FxHashMap::clone(cached);
                cached.insert(channel.as_str().into(), subject.clone());
                cached
            });
        }
        subject
    }

    #[cold]
    async fn publish_tracked(&self, wave: Wave) -> Result<(), EmitError> {
        let (probe, _) = self
            .probe
            .get_or_try_init(|| Probe::start(self.client.clone(), self.shared.clone(), self.id))
            .await?;
        let emitted = wave.channel().clone();
        probe.publish(wave, emitted).await
    }

    /// Publishes what the checks of an emit made of a wave: the wave, or its
    /// reflection if it was dropped and reflects on failure.
    pub(crate) async fn publish_admitted(&self, admitted: Admitted) -> Result<(), EmitError> {
        match admitted {
            Admitted::Ready(wave) => self.publish(&wave).await,
            Admitted::Dropped(reason, wave) => {
                let emitted = wave.channel().clone();
                if let Some(reflected) = wave.failed(reason.into(), emitted) {
                    Box::pin(self.reflect(reflected)).await?;
                }
                Ok(())
            }
        }
    }

    /// Sends a reflection to its source's reflection channel.
    pub(crate) async fn reflect(&self, reflected: Wave) -> Result<(), EmitError> {
        reflect(&self.client, &self.shared, reflected).await
    }

    /// Emits `wave` as a NATS request and waits for the first reply.
    pub(crate) async fn request(
        &self,
        wave: &Wave,
        timeout: Duration,
    ) -> Result<Wave, RequestError> {
        if !self.batch_quiet() {
            self.after_batched().await;
        }
        let shared = &*self.shared;
        let subject = subject::channel_subject(&shared.prefix, wave.channel());
        let request = async_nats::Request::new()
            .payload(shared.seal(&subject, wave))
            .timeout(Some(timeout));
        let reply = self
            .client
            .send_request(subject, request)
            .await
            .map_err(|e| {
                use async_nats::RequestErrorKind as K;
                match e.kind() {
                    K::NoResponders => RequestError::new(
                        RequestErrorKind::NoResponders,
                        format!("no vibrator resonates on {:?}", wave.channel().as_str()),
                    ),
                    K::TimedOut => RequestError::new(
                        RequestErrorKind::TimedOut,
                        format!(
                            "no reply to {:?} within {timeout:?}",
                            wave.channel().as_str()
                        ),
                    ),
                    _ => RequestError::with_source(RequestErrorKind::Emit, e),
                }
            })?;
        let channel = subject::subject_channel(&shared.prefix, &reply.subject)
            .unwrap_or_else(|| wave.channel().clone());
        let body = reply.payload.clone();
        let reply_wave = wire::decode(channel, reply.payload, &shared.limits).map_err(|e| {
            shared.counters.malformed.fetch_add(1, Ordering::Relaxed);
            RequestError::with_source(RequestErrorKind::BadReply, e)
        })?;
        let mut reply_wave = reply_wave;
        let checked = if reply_wave.arrived_rightly() {
            match shared.security.is_enabled() {
                true => shared
                    .security
                    .check_arrival(&reply.subject, &body, &reply_wave),
                false => Ok(()),
            }
            .and_then(|()| shared.security.open(&reply.subject, &mut reply_wave))
        } else {
            Err(DropReason::Forged)
        };
        if let Err(reason) = checked {
            shared.stats.dropped(reason);
            return Err(RequestError::new(
                RequestErrorKind::BadReply,
                format!(
                    "the reply from {:?} was refused: {reason}",
                    reply_wave.source().unwrap_or("an unnamed source")
                ),
            ));
        }
        let mut reply = reply_wave;
        if let Err(reason) = shared.life.judge(&mut reply, 0) {
            shared.stats.dropped(reason);
            return Err(RequestError::new(
                RequestErrorKind::BadReply,
                format!(
                    "the reply from {:?} arrived {reason}",
                    reply.source().unwrap_or("an unnamed source")
                ),
            ));
        }
        shared.stats.delivered();
        Ok(reply)
    }

    /// Subscribes `listener` to `pattern`.
    pub(crate) async fn subscribe(
        &self,
        pattern: Channel,
        listener: Listener,
    ) -> Result<SubscriptionId, ResonateError> {
        let id = SubscriptionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let subject = subject::pattern_subject(&self.shared.prefix, &pattern);
        if let Listener::Hopping(gate) = listener {
            return self.subscribe_hopping(id, subject, gate).await;
        }
        if let Some(durable) = &self.durable
            && durable.covers(&pattern)
            && let Listener::Inbox(inbox) | Listener::Group(_, inbox) = &listener
        {
            let group = match &listener {
                Listener::Group(group, _) => Some(group.clone()),
                _ => None,
            };
            let inbox = inbox.clone();
            let task = durable
                .subscribe(self.shared.clone(), id, pattern, inbox.clone(), group)
                .await?;
            self.lock_subscriptions()
                .insert(id, (Handle::Task(task), inbox));
            return Ok(id);
        }
        let (subscriber, inbox, group) = match listener {
            Listener::Inbox(inbox) => return self.join_fanout(id, subject, pattern, inbox).await,
            Listener::Group(group, inbox) => {
                // Counted before the server hears of it: a message it sends
                // to this queue subscription and to another of the
                // vibrator's is then offered once.
                let resonance = inbox.join_group();
                (
                    self.client
                        .queue_subscribe(subject, group.to_string())
                        .await,
                    inbox,
                    (resonance, group),
                )
            }
            Listener::Replies(_) => {
                unreachable!("requests over NATS use NATS request/reply, not a reply listener")
            }
            Listener::Hopping(_) => unreachable!("handled above"),
        };
        let subscriber =
            subscriber.map_err(|e| ResonateError::with_source(ResonateErrorKind::Medium, e))?;
        let (resonance, name) = group;
        // The group takes a wave once, whichever member gets a copy.
        let last = LastChannel::with_replays(self.shared.group_replays(&name));
        let key = self.arrivals.add(
            subscriber,
            arrivals::Target::Group {
                inbox: inbox.clone(),
                id,
                _resonance: resonance,
            },
            last,
        );
        self.lock_subscriptions()
            .insert(id, (Handle::Arrival(key), inbox));
        Ok(id)
    }

    /// Adds `inbox` (resonating on `pattern` as `id`) to the fan-out of
    /// `subject`, subscribing to it first if this aether does not yet: the
    /// server sends each message once to this aether, which decodes it once
    /// and offers it to every member.
    async fn join_fanout(
        &self,
        id: SubscriptionId,
        subject: String,
        pattern: Channel,
        inbox: Arc<Inbox>,
    ) -> Result<SubscriptionId, ResonateError> {
        inbox.add_pattern(id, pattern);
        let existing = self.lock_fanouts().by_subject.get(&subject).cloned();
        let fanout = match existing {
            Some(fanout) => fanout,
            None => {
                let subscriber = match self.client.subscribe(subject.clone()).await {
                    Ok(subscriber) => subscriber,
                    Err(e) => {
                        inbox.remove_pattern(id);
                        return Err(ResonateError::with_source(ResonateErrorKind::Medium, e));
                    }
                };
                let mut fanouts = self.lock_fanouts();
                // Another resonance may have subscribed meanwhile: join its
                // fan-out, and drop this subscriber (which unsubscribes).
                match fanouts.by_subject.get(&subject) {
                    Some(fanout) => fanout.clone(),
                    None => {
                        let fanout = Arc::new(Fanout {
                            members: ArcSwap::default(),
                            key: std::sync::OnceLock::new(),
                        });
                        let key = self.arrivals.add(
                            subscriber,
                            arrivals::Target::Fanout(fanout.clone()),
                            LastChannel::new(&self.shared),
                        );
                        let _ = fanout.key.set(key);
                        fanouts.by_subject.insert(subject.clone(), fanout.clone());
                        fanout
                    }
                }
            }
        };
        fanout.members.rcu(|members| {
            let mut members = Vec::clone(members);
            members.push((id, inbox.clone()));
            members
        });
        self.lock_fanouts().by_member.insert(id, subject);
        Ok(id)
    }

    fn lock_fanouts(&self) -> std::sync::MutexGuard<'_, Fanouts> {
        self.fanouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes a hopping resonance's gate to one wire channel's subject.
    async fn subscribe_hopping(
        &self,
        id: SubscriptionId,
        subject: String,
        gate: Arc<HopGate>,
    ) -> Result<SubscriptionId, ResonateError> {
        let subscriber = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| ResonateError::with_source(ResonateErrorKind::Medium, e))?;
        let inbox = gate.inbox().clone();
        let key = self.arrivals.add(
            subscriber,
            arrivals::Target::Hopping(gate),
            LastChannel::new(&self.shared),
        );
        self.lock_subscriptions()
            .insert(id, (Handle::Arrival(key), inbox));
        Ok(id)
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        let mut subscriptions = self.lock_subscriptions();
        let mut fanouts = self.lock_fanouts();
        for id in ids {
            // Dropping the subscriber unsubscribes.
            if let Some((handle, inbox)) = subscriptions.remove(id) {
                self.end(handle);
                inbox.remove_pattern(*id);
            } else if let Some(subject) = fanouts.by_member.remove(id)
                && let Some(fanout) = fanouts.by_subject.get(&subject).cloned()
            {
                let mut left = 0;
                fanout.members.rcu(|members| {
                    let mut members = Vec::clone(members);
                    if let Some(at) = members.iter().position(|(other, _)| other == id) {
                        let (_, inbox) = members.remove(at);
                        inbox.remove_pattern(*id);
                    }
                    left = members.len();
                    members
                });
                if left == 0 {
                    fanouts.by_subject.remove(&subject);
                    if let Some(key) = fanout.key.get() {
                        self.arrivals.remove(*key);
                    }
                }
            }
        }
    }

    /// Stops every subscription and the flusher.
    /// Waits (up to `timeout`) until the outbox is empty and the client has
    /// written everything it holds to the server.
    pub(crate) async fn flush(&self, timeout: Duration) -> Result<(), EmitError> {
        let shared = &*self.shared;
        let done = async {
            while !shared.outbox.is_idle(&shared.counters)
                || self.durable.as_ref().is_some_and(|d| !d.is_idle())
            {
                shared.wake_flusher.notify_one();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some(batcher) = &self.batcher {
                batcher.drained().await;
            }
            self.client.flush().await
        };
        match tokio::time::timeout(timeout, done).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EmitError::with_source(EmitErrorKind::Medium, e)),
            Err(_) => Err(EmitError::new(
                EmitErrorKind::Medium,
                format!(
                    "waves still waiting after {timeout:?} ({} in the outbox, {} in the \
                     durable outbox); is NATS reachable?",
                    shared.counters.outbox_len.load(Ordering::Relaxed),
                    self.durable.as_ref().map_or(0, |d| d.pending())
                ),
            )),
        }
    }

    /// Ends one subscription.
    fn end(&self, handle: Handle) {
        match handle {
            Handle::Task(task) => task.abort(),
            Handle::Arrival(key) => self.arrivals.remove(key),
        }
    }

    pub(crate) fn close(&self) {
        for (_, (handle, _)) in self.lock_subscriptions().drain() {
            self.end(handle);
        }
        let mut fanouts = self.lock_fanouts();
        fanouts.by_member.clear();
        fanouts.by_subject.clear();
        self.arrivals.stop();
        self.flusher.abort();
        if let Some(batcher) = &self.batcher {
            batcher.close();
        }
        if let Some(durable) = &self.durable {
            durable.stop();
        }
        if let Some((_, task)) = self.probe.get() {
            task.abort();
        }
        self.shared.counters.set_state(ConnectionState::Closed);
    }

    fn lock_subscriptions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SubscriptionId, (Handle, Arc<Inbox>)>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for NatsMedium {
    fn drop(&mut self) {
        self.close();
    }
}

/// How near the largest message a payload takes the measured path: more
/// than any envelope's fields and a batch entry's framing.
const NEAR_LIMIT: usize = 4096;

impl Shared {
    /// Refuses an envelope larger than `nats.max_wave_bytes` (by default
    /// the server's own `max_payload`): no aether would take it off the
    /// wire, and the server would refuse it after `emit` returned.
    fn check_size(&self, body: &[u8]) -> Result<(), EmitError> {
        let max = self.max_message();
        if body.len() > max {
            return Err(EmitError::new(
                EmitErrorKind::TooLarge,
                format!(
                    "the wave's envelope is {} bytes, over the largest message of {max} bytes \
                     (nats.max_wave_bytes, or the server's own max_payload if smaller): send a \
                     smaller payload",
                    body.len()
                ),
            ));
        }
        Ok(())
    }

    /// The largest envelope that may be sent: `nats.max_wave_bytes`, or
    /// the server's `max_payload` when that is smaller.
    fn max_message(&self) -> usize {
        match self.server_max_payload.load(Ordering::Relaxed) {
            0 => self.limits.max_body_bytes,
            server => server.min(self.limits.max_body_bytes),
        }
    }

    /// Reads the largest message of the server `client` is connected to.
    fn note_server(&self, client: &Client) {
        let max = client.server_info().max_payload;
        if max > 0 {
            self.server_max_payload.store(max, Ordering::Relaxed);
        }
    }

    /// Whether an emit may go straight to the client: connected, as the
    /// connection's events last said (a wave sent just after a loss nobody
    /// noticed yet waits in the client's own queue), and nothing waiting in
    /// the outbox or being flushed.
    fn may_bypass_outbox(&self) -> bool {
        self.counters.state() == ConnectionState::Connected && self.outbox.is_idle(&self.counters)
    }

    fn on_event(&self, event: Event) {
        let counters = &self.counters;
        let ours = match event {
            Event::Connected => {
                counters.connects.fetch_add(1, Ordering::Relaxed);
                counters.set_state(ConnectionState::Connected);
                self.wake_flusher.notify_one();
                tracing::info!(
                    servers = %self.config.nats.redacted_urls().join(","),
                    "connected to NATS"
                );
                ConnectionEvent::Connected
            }
            Event::Disconnected => {
                counters.disconnects.fetch_add(1, Ordering::Relaxed);
                counters.set_state(ConnectionState::Disconnected);
                tracing::warn!("disconnected from NATS; reconnecting");
                ConnectionEvent::Disconnected
            }
            Event::SlowConsumer(sid) => {
                counters
                    .slow_consumer_events
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(sid, "slow consumer: the client dropped a message");
                ConnectionEvent::SlowConsumer
            }
            Event::LameDuckMode => {
                tracing::warn!("NATS server entered lame duck mode");
                ConnectionEvent::LameDuck
            }
            Event::ServerError(error) => {
                tracing::warn!(%error, "NATS server error");
                ConnectionEvent::ServerError(error.to_string())
            }
            Event::Closed => {
                counters.set_state(ConnectionState::Closed);
                ConnectionEvent::Closed
            }
            Event::Draining | Event::ClientError(_) => {
                tracing::debug!(%event, "NATS client event");
                return;
            }
        };
        // Nobody listening is fine.
        let _ = self.events.send(ours);
    }

    /// The envelope of `wave` on `subject`: its payload sealed where its
    /// channel's payloads are, then signed where its source has a key.
    fn seal(&self, subject: &str, wave: &Wave) -> bytes::Bytes {
        let sealed = self.security.seal(subject, wave);
        let wave = sealed.as_ref().unwrap_or(wave);
        let version = self.config.nats.wire_version;
        match self.security.key_of(wave.source()) {
            Some(key) => wire::encode_signed_as(version, wave, subject, &key),
            None => wire::encode_as(version, wave),
        }
    }

    /// Counts and (sparingly) logs a message that is not a valid wave.
    fn refuse(&self, subject: &str, error: &dyn std::fmt::Display) {
        let n = self.counters.malformed.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(MALFORMED_LOG_EVERY) {
            tracing::warn!(subject, %error, refused = n + 1, "refused a message that is not a valid wave");
        }
    }
}

/// Publishes `body` on `subject` (with a reply subject for a tracked wave),
/// or keeps it in the outbox while the connection is down.
async fn send(
    client: &Client,
    shared: &Shared,
    subject: String,
    reply: Option<String>,
    body: bytes::Bytes,
) -> Result<(), EmitError> {
    shared.check_size(&body)?;
    if shared.may_bypass_outbox() {
        return publish_with(client, subject, reply, body)
            .await
            .map_err(|e| EmitError::with_source(EmitErrorKind::Medium, e));
    }
    shared
        .outbox
        .push((subject, reply, body), &shared.counters)
        .map_err(|_| {
            EmitError::new(
                EmitErrorKind::OutboxFull,
                format!(
                    "disconnected from NATS and the outbox holds {} waves already; \
                     retry later or raise nats.outbox_capacity",
                    shared.outbox.capacity()
                ),
            )
        })?;
    // The connection may have come back (and the flusher finished)
    // between the check and the push: make sure this wave is not left.
    if shared.counters.state() == ConnectionState::Connected {
        shared.wake_flusher.notify_one();
    }
    Ok(())
}

/// Hands a message to the client, with its reply subject if it has one.
async fn publish_with(
    client: &Client,
    subject: String,
    reply: Option<String>,
    body: bytes::Bytes,
) -> Result<(), async_nats::PublishError> {
    match reply {
        None => client.publish(subject, body).await,
        Some(reply) => client.publish_with_reply(subject, reply, body).await,
    }
}

/// Sends a reflection to its source's reflection channel, counted as emitted
/// and reflected.
async fn reflect(client: &Client, shared: &Shared, reflected: Wave) -> Result<(), EmitError> {
    let Some(routing) = reflection::channel_of(reflected.source(), reflected.origin()) else {
        // It names no source to return to.
        shared.stats.unrouted();
        return Ok(());
    };
    let subject = subject::channel_subject(&shared.prefix, &routing);
    shared.stats.emitted();
    shared.stats.reflected();
    let body = shared.seal(&subject, &reflected);
    send(client, shared, subject, None, body).await
}

/// Sends the outbox, in order, each time the connection comes back.
async fn flush_on_reconnect(client: Client, shared: Arc<Shared>) {
    loop {
        shared.wake_flusher.notified().await;
        if client.connection_state() != State::Connected {
            continue;
        }
        // Another server may take smaller messages.
        shared.note_server(&client);
        shared.outbox.start_flush();
        let mut sent = 0;
        while let Some(item) = shared.outbox.next_to_flush(&shared.counters) {
            let (subject, reply, body) = item.clone();
            if let Err(error) = publish_with(&client, subject, reply, body).await {
                tracing::warn!(%error, "could not flush the outbox; keeping the waves");
                shared.outbox.put_back(item, &shared.counters);
                break;
            }
            sent += 1;
        }
        if sent > 0 {
            shared
                .counters
                .outbox_flushed
                .fetch_add(sent as u64, Ordering::Relaxed);
            let _ = shared.events.send(ConnectionEvent::OutboxFlushed(sent));
        }
    }
}
