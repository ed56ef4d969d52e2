//! The life of an aether's connection to its medium, for operators.
//!
//! [`Aether::connection`](crate::Aether::connection) gives a
//! [`ConnectionStatus`] at any time, read without locks;
//! [`Aether::connection_events`](crate::Aether::connection_events) follows
//! every change as a [`ConnectionEvent`].

use std::{
    fmt,
    sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

/// Whether an aether can reach its medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// In process: the embedded medium is always there.
    Embedded,
    /// Connected to a NATS server.
    Connected,
    /// Not connected (yet or any more): waves wait in the outbox.
    Disconnected,
    /// Closed for good.
    Closed,
}

impl ConnectionState {
    /// A short snake_case name, fit for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Embedded => "embedded",
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Closed => "closed",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Connected (or reconnected) to a server; subscriptions are restored.
    Connected,
    /// The connection was lost; the client is reconnecting.
    Disconnected,
    /// The outbox was sent after a reconnect: this many waves, in order.
    OutboxFlushed(usize),
    /// The client dropped a message for a subscription whose buffer was
    /// full (a slow consumer).
    SlowConsumer,
    /// The server is shutting down gracefully (lame duck mode).
    LameDuck,
    /// The server reported an error (authorization, permissions, ...).
    ServerError(String),
    /// The connection was closed for good.
    Closed,
}

/// The connection at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStatus {
    /// The state now.
    pub state: ConnectionState,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Times it was (re)established, the first connect included.
    pub connects: u64,
    /// Messages the client dropped because a subscription's buffer was full
    /// (each one reported by the client as a slow-consumer event).
    pub slow_consumer_events: u64,
    /// Messages that arrived but were not valid waves (malformed, truncated,
    /// oversized, unknown version), or came on a subject that is not a
    /// channel of this aether, refused and counted. (Waves refused by the
    /// checks that follow, forged, denied, replayed, expired, are drops.)
    pub malformed: u64,
    /// Waves waiting in the outbox for the connection to come back.
    pub outbox_len: usize,
    /// Most waves the outbox keeps.
    pub outbox_capacity: usize,
    /// Waves sent from the outbox after reconnects.
    pub outbox_flushed: u64,
    /// Waves of durable channels accepted by `emit` and not stored by
    /// JetStream yet: in the durable outbox, sent when the server takes
    /// them again.
    pub durable_outbox_len: usize,
    /// Bytes those waves take against `durability.outbox_max_bytes`.
    pub durable_outbox_bytes: u64,
    /// `durability.outbox_max_bytes` (0 without durable channels): past
    /// it, emits on durable channels are refused (`OutboxFull`).
    pub durable_outbox_max_bytes: u64,
    /// The most JetStream streams seen answering, since the start, the
    /// question of which capture a durable channel (asked at each connect
    /// and every 30 s): 1 when all is well; 2 or more when streams in
    /// several JetStream domains (a leaf node's own and its hub's) each
    /// store every wave, so that a cut link strands waves on one side
    /// (logged as an error; kept until the program starts again, since a
    /// cut hides the second stream without mending anything); 0 before the
    /// first answer or without durable channels.
    pub durable_captures: usize,
    /// Batch frames published: messages that carried several waves
    /// (`[aether.nats.batch]`).
    pub frames_sent: u64,
    /// Waves sent inside those frames.
    pub waves_framed: u64,
    /// Batch frames received; each wave in one is counted as if it had come
    /// alone.
    pub frames_received: u64,
}

impl ConnectionStatus {
    /// Waves accepted and not sent yet: in the outbox and the durable
    /// outbox.
    pub fn unsent(&self) -> usize {
        self.outbox_len + self.durable_outbox_len
    }

    /// The status of an embedded aether.
    pub(crate) fn embedded() -> Self {
        Self {
            state: ConnectionState::Embedded,
            disconnects: 0,
            connects: 0,
            slow_consumer_events: 0,
            malformed: 0,
            outbox_len: 0,
            outbox_capacity: 0,
            outbox_flushed: 0,
            durable_outbox_len: 0,
            durable_outbox_bytes: 0,
            durable_outbox_max_bytes: 0,
            durable_captures: 0,
            frames_sent: 0,
            waves_framed: 0,
            frames_received: 0,
        }
    }
}

/// The JetStream stream of the durable channels, as the server reports it
/// ([`crate::Operator::durable_stream`]): how full it is against its limits.
/// Past `max_bytes` (or `max_messages`) the server deletes the oldest
/// waves, taken or not; past `max_age` it deletes those older.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStatus {
    /// The stream's name (`durability.stream`).
    pub name: String,
    /// Waves it holds.
    pub messages: u64,
    /// Bytes they take (per replica).
    pub bytes: u64,
    /// Most bytes it keeps; 0: no limit.
    pub max_bytes: u64,
    /// Most waves it keeps; 0: no limit.
    pub max_messages: u64,
    /// Oldest wave it keeps; zero: no limit.
    pub max_age: Duration,
    /// How old its oldest wave is (zero when empty).
    pub oldest_age: Duration,
    /// Sequence of its first and last wave.
    pub first_sequence: u64,
    /// Sequence of its last wave.
    pub last_sequence: u64,
    /// Copies on different servers, as configured.
    pub replicas: usize,
    /// Its consumers.
    pub consumers: usize,
    /// The server that leads its copies (`None` when it has no leader now,
    /// or the server runs without clustering).
    pub leader: Option<String>,
    /// Copies up to date: the leader's and each peer's that is current.
    /// Below `replicas`, a server is lost or behind.
    pub replicas_current: usize,
    /// Copies the stream's group counts offline.
    pub replicas_offline: usize,
    /// Copies neither current nor offline: catching up with the leader.
    pub replicas_lagging: usize,
    /// Its consumers' backlogs (at most [`MAX_CONSUMERS_LISTED`], by name).
    pub consumer_backlogs: Vec<ConsumerBacklog>,
}

/// Most consumers a [`StreamStatus`] lists.
pub const MAX_CONSUMERS_LISTED: usize = 256;

/// A durable consumer's backlog, as the server counts it: what Kafka's
/// users read as a consumer group's lag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerBacklog {
    /// The consumer's name (`durable_consumer_name`: the resonance's name
    /// and pattern).
    pub name: String,
    /// Waves stored and not handed out to it yet.
    pub pending: u64,
    /// Waves handed out and not acknowledged yet.
    pub ack_pending: u64,
    /// Waves handed out more than once (a receiver slower than
    /// `ack_wait_ms`, or one that died holding them).
    pub redelivered: u64,
}

impl ConsumerBacklog {
    /// A consumer's backlog.
    pub fn new(name: impl Into<String>, pending: u64, ack_pending: u64, redelivered: u64) -> Self {
        Self {
            name: name.into(),
            pending,
            ack_pending,
            redelivered,
        }
    }
}

/// Counters behind a [`ConnectionStatus`].
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct ConnectionCounters {
    pub(crate) state: AtomicU8,
    pub(crate) disconnects: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) slow_consumer_events: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) outbox_flushed: AtomicU64,
    pub(crate) outbox_len: AtomicUsize,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) waves_framed: AtomicU64,
    pub(crate) frames_received: AtomicU64,
}

impl ConnectionCounters {
    /// A frame of `waves` waves was published.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn framed(&self, waves: u64) {
        self.frames_sent.fetch_add(1, Relaxed);
        self.waves_framed.fetch_add(waves, Relaxed);
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn set_state(&self, state: ConnectionState) {
        self.state.store(state as u8, Relaxed);
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn state(&self) -> ConnectionState {
        match self.state.load(Relaxed) {
            s if s == ConnectionState::Connected as u8 => ConnectionState::Connected,
            s if s == ConnectionState::Closed as u8 => ConnectionState::Closed,
            s if s == ConnectionState::Embedded as u8 => ConnectionState::Embedded,
            _ => ConnectionState::Disconnected,
        }
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn snapshot(&self, outbox_capacity: usize) -> ConnectionStatus {
        ConnectionStatus {
            state: self.state(),
            disconnects: self.disconnects.load(Relaxed),
            connects: self.connects.load(Relaxed),
            slow_consumer_events: self.slow_consumer_events.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            outbox_len: self.outbox_len.load(Relaxed),
            outbox_capacity,
            outbox_flushed: self.outbox_flushed.load(Relaxed),
            durable_outbox_len: 0,
            durable_outbox_bytes: 0,
            durable_outbox_max_bytes: 0,
            durable_captures: 0,
            frames_sent: self.frames_sent.load(Relaxed),
            waves_framed: self.waves_framed.load(Relaxed),
            frames_received: self.frames_received.load(Relaxed),
        }
    }
}
