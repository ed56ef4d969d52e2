//! The aether: the medium every vibrator emits into and resonates on.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::broadcast;

use crate::{
    AetherConfig, ConfigError, ConnectError, ConnectErrorKind, EmitError, EmitErrorKind,
    ResonateError, ResonateErrorKind, Wave,
    connection::{ConnectionEvent, ConnectionStatus},
    inbox::Inbox,
    medium::{
        Listener, Medium, Routed, SubscriptionId, embedded::EmbeddedMedium, nats::NatsMedium,
    },
    stats::{Counters, DropReason, StatsSnapshot},
    wave::unix_nanos,
};

/// A handle to an aether. Cheap to clone; every clone is the same aether.
///
/// `Aether::default()` is the embedded medium with the default settings: in
/// process, no network, no configuration. [`Aether::connect`] is the same
/// aether over NATS, across processes and machines.
///
/// ```
/// use aether_core::{Aether, AetherConfig};
///
/// let aether = Aether::default();
/// let tuned = Aether::new(AetherConfig { channel_buffer_size: 10_000, ..Default::default() })?;
/// assert_eq!(tuned.config().channel_buffer_size, 10_000);
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Aether {
    inner: Arc<Inner>,
}

struct Inner {
    config: AetherConfig,
    stats: Arc<Counters>,
    medium: Medium,
    closed: AtomicBool,
    /// Every live receive queue, to close them all with the aether.
    inboxes: Mutex<HashMap<u64, Weak<Inbox>>>,
}

impl Aether {
    /// An aether on the embedded medium with `config`, refused if a setting is
    /// out of range.
    pub fn new(config: AetherConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let medium = Medium::Embedded(EmbeddedMedium::default());
        Ok(Self::with_medium(config, Arc::default(), medium))
    }

    /// An aether over NATS, reaching the servers of `config.nats` (TLS and
    /// credentials included). Vibrators work exactly as on the embedded
    /// medium, across every process connected to the same servers with the
    /// same `subject_prefix`.
    ///
    /// Fails if a setting is invalid, or if no server can be reached (unless
    /// `nats.retry_on_initial_connect`). Once connected, the connection is
    /// restored by itself after a loss: subscriptions come back, and waves
    /// emitted meanwhile wait in the outbox ([`Aether::connection`]).
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, AetherConfig, Vibrator, config::NatsConfig};
    ///
    /// let aether = Aether::connect(AetherConfig {
    ///     nats: NatsConfig { urls: vec!["nats://127.0.0.1:4222".into()], ..Default::default() },
    ///     ..Default::default()
    /// })
    /// .await?;
    /// let shop = Vibrator::create("shop", &aether).await?;
    /// shop.emit_wave("orders.created", serde_json::json!({"order_id": 7})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: AetherConfig) -> Result<Self, ConnectError> {
        config
            .validate()
            .map_err(|e| ConnectError::with_source(ConnectErrorKind::Config, e))?;
        let stats = Arc::new(Counters::default());
        let medium = Medium::Nats(Box::new(NatsMedium::connect(&config, stats.clone()).await?));
        Ok(Self::with_medium(config, stats, medium))
    }

    fn with_medium(config: AetherConfig, stats: Arc<Counters>, medium: Medium) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                stats,
                medium,
                closed: AtomicBool::new(false),
                inboxes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The connection to the medium now: state, reconnects, slow-consumer
    /// events, malformed messages refused, outbox use. Read without locks.
    pub fn connection(&self) -> ConnectionStatus {
        match &self.inner.medium {
            Medium::Embedded(_) => ConnectionStatus::embedded(),
            Medium::Nats(nats) => nats.status(),
        }
    }

    /// Every change of the connection from now on. The embedded medium has
    /// none: its receiver ends at once.
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        match &self.inner.medium {
            Medium::Embedded(_) => broadcast::channel(1).1,
            Medium::Nats(nats) => nats.events(),
        }
    }

    pub(crate) fn nats(&self) -> Option<&NatsMedium> {
        match &self.inner.medium {
            Medium::Nats(nats) => Some(nats),
            Medium::Embedded(_) => None,
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &AetherConfig {
        &self.inner.config
    }

    /// Counters of every wave emitted into this aether, read without locks.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Closes the aether: emits fail with `Closed`, and every vibrator's
    /// `receive` returns the waves already queued, then `None`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Medium::Nats(nats) = &self.inner.medium {
            nats.close();
        }
        let inboxes: Vec<Arc<Inbox>> = self
            .lock_inboxes()
            .drain()
            .filter_map(|(_, weak)| weak.upgrade())
            .collect();
        for inbox in inboxes {
            inbox.close();
        }
    }

    /// Whether [`Aether::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    fn lock_inboxes(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Inbox>>> {
        self.inner.inboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register_inbox(&self, inbox: &Arc<Inbox>) -> bool {
        let mut inboxes = self.lock_inboxes();
        // Checked under the lock that `close` drains, so no queue is missed.
        if self.is_closed() {
            return false;
        }
        inboxes.insert(inbox.id(), Arc::downgrade(inbox));
        true
    }

    pub(crate) fn deregister_inbox(&self, id: u64) {
        self.lock_inboxes().remove(&id);
    }

    pub(crate) async fn subscribe(
        &self,
        pattern: crate::Channel,
        listener: Listener,
    ) -> Result<SubscriptionId, ResonateError> {
        if self.is_closed() {
            return Err(ResonateError::new(
                ResonateErrorKind::Closed,
                "the aether was closed; create a new one",
            ));
        }
        match &self.inner.medium {
            Medium::Embedded(m) => Ok(m.subscribe(pattern, listener)),
            Medium::Nats(m) => m.subscribe(pattern, listener).await,
        }
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        self.inner.medium.unsubscribe(ids);
    }

    /// Checks, measures and routes a stamped wave on the embedded medium.
    #[inline]
    pub(crate) fn dispatch(&self, wave: Wave, now_ns: u64) -> Result<Routed, EmitError> {
        let Some(wave) = self.admit(wave, now_ns)? else {
            return Ok(Routed::default());
        };
        match &self.inner.medium {
            Medium::Embedded(m) => Ok(m.route(wave, &self.inner.stats)),
            Medium::Nats(_) => unreachable!("waves go to NATS through NatsMedium::publish"),
        }
    }

    /// The checks every emit passes on every medium: `Err` if refused,
    /// `Ok(None)` if accepted but dropped (and counted), else the wave
    /// measured and ready to route.
    #[inline]
    pub(crate) fn admit(&self, mut wave: Wave, now_ns: u64) -> Result<Option<Wave>, EmitError> {
        if self.is_closed() {
            return Err(EmitError::new(
                EmitErrorKind::Closed,
                "the aether was closed; create a new one to emit again",
            ));
        }
        wave.channel()
            .validate_concrete()
            .map_err(|e| EmitError::with_source(EmitErrorKind::InvalidChannel, e))?;
        if let Some(reply_to) = wave.reply_to() {
            reply_to
                .validate_concrete()
                .map_err(|e| EmitError::with_source(EmitErrorKind::InvalidChannel, e))?;
        }
        let config = &self.inner.config;
        let stats = &self.inner.stats;
        stats.emitted();
        if wave.propagation_count() > config.max_propagation {
            stats.dropped(DropReason::PropagationLimit);
            return Ok(None);
        }
        if wave.propagation_count() > 0 || wave.decay_per_s() > 0.0 {
            let now = if now_ns == 0 { unix_nanos() } else { now_ns };
            wave.measure(now, config.attenuation_factor);
        }
        if wave.amplitude().value() < config.min_amplitude {
            stats.dropped(DropReason::Expired);
            return Ok(None);
        }
        Ok(Some(wave))
    }
}

impl Default for Aether {
    fn default() -> Self {
        Self::new(AetherConfig::default()).expect("the default configuration is valid")
    }
}

impl fmt::Debug for Aether {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let medium = match &self.inner.medium {
            Medium::Embedded(_) => "embedded",
            Medium::Nats(_) => "nats",
        };
        f.debug_struct("Aether")
            .field("medium", &medium)
            .field("closed", &self.is_closed())
            .field("config", &self.inner.config)
            .finish()
    }
}
