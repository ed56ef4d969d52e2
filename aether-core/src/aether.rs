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
    AetherConfig, Channel, ConfigError, EmitError, EmitErrorKind, RequestError, ResonateError,
    ResonateErrorKind, Wave,
    admission::Life,
    connection::{ConnectionEvent, ConnectionStatus},
    inbox::Inbox,
    medium::{Listener, Medium, Publishing, SubscriptionId, embedded::EmbeddedMedium},
    physics::{Physics, PhysicsHub},
    reply::ReplyMux,
    report::{InstanceReport, KeeperSource, MapReport, MapSource},
    security::Security,
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

pub(crate) struct Inner {
    config: AetherConfig,
    /// The life rules of its waves, from `config`.
    life: Life,
    stats: Arc<Counters>,
    medium: Medium,
    closed: AtomicBool,
    /// Every live receive queue, to close them all with the aether.
    inboxes: Mutex<HashMap<u64, Weak<Inbox>>>,
    /// The physics engine on the bus: idle until someone asks for it.
    physics: Arc<PhysicsHub>,
    /// Signatures and access rules (`[aether.security]`).
    security: Arc<Security>,
    /// Replicas of replicated maps on this aether, for its reports.
    maps: Mutex<Vec<Weak<dyn MapSource>>>,
    /// Its keeper, for the instance reports.
    keeper: Mutex<Option<Weak<dyn KeeperSource>>>,
    /// Set once the bus's time runs on it ([`crate::bustime::start`]).
    clock_started: tokio::sync::OnceCell<()>,
    /// The instance name its reports carry, once they run.
    reporting: std::sync::OnceLock<String>,
    /// Reports sent (the last one's `seq`).
    report_seq: std::sync::atomic::AtomicU64,
    /// When refused emits were last logged, and what is left to log.
    refusals_logged: Mutex<RefusalsLogged>,
}

/// When refused emits were last logged, how many had been refused then, and
/// whether a warning waits for the end of the quiet time.
#[derive(Default)]
struct RefusalsLogged {
    at: Option<std::time::Instant>,
    total: u64,
    /// A warning of the refusals since `at` is due at the end of
    /// [`REFUSALS_LOGGED_EVERY`], with the last one's reason.
    tail: Option<EmitErrorKind>,
}

/// Logs the emits refused since the last warning (the last with `kind`).
fn log_refusals(inner: &Inner, logged: &mut RefusalsLogged, kind: EmitErrorKind) {
    let total = inner.stats.refused_total();
    let since = total - logged.total;
    *logged = RefusalsLogged {
        at: Some(std::time::Instant::now()),
        total,
        tail: None,
    };
    tracing::warn!(
        refused = since,
        total,
        reason = kind.as_str(),
        "emits refused since the last such warning, the caller told each: counted by \
         reason in aether_emits_refused_total and in `aether stats`"
    );
}

/// Refused emits are logged at most this often.
pub(crate) const REFUSALS_LOGGED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Inner {
    fn drop(&mut self) {
        // The engine thread ends with the aether.
        self.physics.stop();
    }
}

impl Aether {
    /// An aether on the embedded medium with `config`, refused if a setting is
    /// out of range.
    pub fn new(config: AetherConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let security = Arc::new(Security::from_config(&config.security)?);
        let stats = Arc::new(Counters::default());
        let medium = Medium::Embedded(EmbeddedMedium::open(&config, stats.clone())?);
        Ok(Self::with_medium(config, stats, medium, security))
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
    #[cfg(feature = "nats")]
    pub async fn connect(config: AetherConfig) -> Result<Self, crate::ConnectError> {
        use crate::{ConnectError, ConnectErrorKind, medium::nats::NatsMedium};
        config
            .validate()
            .map_err(|e| ConnectError::with_source(ConnectErrorKind::Config, e))?;
        let security = Arc::new(
            Security::from_config(&config.security)
                .map_err(|e| ConnectError::with_source(ConnectErrorKind::Config, e))?,
        );
        let stats = Arc::new(Counters::default());
        let medium = Medium::Nats(Box::new(
            NatsMedium::connect(&config, stats.clone(), security.clone()).await?,
        ));
        Ok(Self::with_medium(config, stats, medium, security))
    }

    /// An aether over the NATS servers at `urls` (`nats://host:port` or
    /// `tls://host:port`; several of one cluster separated by commas), every
    /// other setting at its default: [`Aether::connect`] in one line.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), aether_core::ConnectError> {
    /// let aether = aether_core::Aether::connect_url("nats://127.0.0.1:4222").await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "nats")]
    pub async fn connect_url(urls: &str) -> Result<Self, crate::ConnectError> {
        let urls = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(String::from)
            .collect();
        let nats = crate::config::NatsConfig {
            urls,
            ..Default::default()
        };
        Self::connect(AetherConfig {
            nats,
            ..Default::default()
        })
        .await
    }

    fn with_medium(
        config: AetherConfig,
        stats: Arc<Counters>,
        medium: Medium,
        security: Arc<Security>,
    ) -> Self {
        let physics = Arc::new(PhysicsHub::new(config.physics.clone()));
        let aether = Self {
            inner: Arc::new(Inner {
                life: Life::of(&config),
                config,
                stats,
                medium,
                closed: AtomicBool::new(false),
                inboxes: Mutex::new(HashMap::new()),
                physics,
                security,
                maps: Mutex::new(Vec::new()),
                keeper: Mutex::new(None),
                clock_started: tokio::sync::OnceCell::new(),
                reporting: std::sync::OnceLock::new(),
                report_seq: std::sync::atomic::AtomicU64::new(0),
                refusals_logged: Mutex::new(RefusalsLogged::default()),
            }),
        };
        aether.start_reports();
        aether
    }

    /// Starts the instance reports (`[aether.report]`), if they are on and
    /// a Tokio runtime runs this.
    fn start_reports(&self) {
        let report = &self.inner.config.report;
        if report.interval.is_zero() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("instance reports are on, but no Tokio runtime runs: none is sent");
            return;
        };
        let instance = report.instance_name();
        if self.inner.medium.crosses_processes() && self.inner.security.would_be_forged(&instance) {
            // Every receiver would drop them as forged: noise in that count.
            tracing::warn!(
                instance,
                "instance reports are off: signatures are required and this aether holds no \
                 key for the instance's name; name the instance after a source whose key it \
                 holds ([aether.report] instance)"
            );
            return;
        }
        let _ = self.inner.reporting.set(instance.clone());
        let interval = report.interval;
        // Held weakly between reports, so that they do not keep it alive.
        let inner = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            crate::report::run(&instance, interval, || {
                let aether = Aether::upgrade(&inner).filter(|a| !a.is_closed())?;
                let instance = instance.clone();
                Some(async move {
                    let report = aether.compose_report(&instance, aether.next_report_seq());
                    aether.send_report(&instance, &report).await
                })
            })
            .await;
        });
    }

    /// What it reports now, as report number `seq` of `instance`.
    pub(crate) fn compose_report(&self, instance: &str, seq: u64) -> InstanceReport {
        use crate::report::{MAX_REPORTED_VIBRATORS, VibratorReport, drops};
        let stats = self.stats();
        let connection = self.connection();
        let mut vibrators: Vec<VibratorReport> = self
            .inboxes()
            .into_iter()
            .map(|inbox| {
                let stats = inbox.stats().snapshot();
                VibratorReport {
                    name: inbox.name().to_string(),
                    origin: format!("{:016x}", inbox.id()),
                    published: stats.published,
                    delivered: stats.delivered,
                    queued: inbox.len() as u64,
                    capacity: inbox.capacity() as u64,
                    dropped: drops(&stats, false),
                }
            })
            .collect();
        let (queued, queue_capacity) = vibrators
            .iter()
            .fold((0, 0), |(q, c), v| (q + v.queued, c + v.capacity));
        vibrators.sort_by(|a, b| {
            (b.published + b.delivered)
                .cmp(&(a.published + a.delivered))
                .then_with(|| a.origin.cmp(&b.origin))
        });
        vibrators.truncate(MAX_REPORTED_VIBRATORS);
        let clock = crate::wave::clock::status();
        InstanceReport {
            instance: instance.to_string(),
            seq,
            interval_ms: crate::config::as_ms(self.config().report.interval),
            medium: match connection.state {
                crate::ConnectionState::Embedded => "embedded",
                _ => "nats",
            }
            .to_string(),
            connection: connection.state.as_str().to_string(),
            emitted: stats.emitted,
            delivered: stats.delivered,
            dropped: drops(&stats, true),
            rate_limited: stats.rate_limited,
            rate_limit_waits: stats.rate_limit_waits,
            handler_panics: stats.handler_panics,
            refused_emits: stats
                .refusals()
                .filter(|(_, n)| *n > 0)
                .map(|(kind, n)| (kind.as_str().to_string(), n))
                .collect(),
            malformed: connection.malformed,
            slow_consumer_events: connection.slow_consumer_events,
            disconnects: connection.disconnects,
            outbox_len: connection.outbox_len as u64,
            outbox_capacity: connection.outbox_capacity as u64,
            durable_outbox_len: connection.durable_outbox_len as u64,
            durable_outbox_bytes: connection.durable_outbox_bytes,
            durable_outbox_max_bytes: connection.durable_outbox_max_bytes,
            durable_captures: connection.durable_captures as u64,
            queued,
            queue_capacity,
            vibrators,
            maps: self.map_reports(),
            leaving: false,
            keeper: self
                .inner
                .keeper
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(Weak::upgrade)
                .map(|k| k.keeper_stats()),
            clock_offset_ms: clock.offset_ns / 1_000_000,
            clock_uncertainty_ms: clock.uncertainty_ns / 1_000_000,
            clock_sources: clock.sources as u64,
        }
    }

    /// Emits `report` on the instance's report channel; whether it went.
    pub(crate) async fn send_report(&self, instance: &str, report: &InstanceReport) -> bool {
        let (Some(channel), Ok(body)) = (
            crate::report::channel_of(instance),
            serde_json::to_vec(report),
        ) else {
            return false;
        };
        match self
            .emit_own(crate::Wave::new(channel, body), instance)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "the instance report was not sent");
                false
            }
        }
    }

    /// The aether of `inner`, if it is still alive.
    pub(crate) fn upgrade(inner: &Weak<Inner>) -> Option<Self> {
        inner.upgrade().map(|inner| Self { inner })
    }

    /// Set once the bus's time runs on it.
    pub(crate) fn clock_started(&self) -> &tokio::sync::OnceCell<()> {
        &self.inner.clock_started
    }

    /// Registers its keeper, for the instance reports.
    pub(crate) fn register_keeper(&self, source: Weak<dyn KeeperSource>) {
        *self.inner.keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Registers a replica of a replicated map, for the instance reports.
    pub(crate) fn register_map(&self, source: Weak<dyn MapSource>) {
        let mut maps = self.inner.maps.lock().unwrap_or_else(|e| e.into_inner());
        maps.retain(|m| m.strong_count() > 0);
        maps.push(source);
    }

    /// The reports of its live replicas, by map and node, at most
    /// [`MAX_REPORTED_MAPS`](crate::report::MAX_REPORTED_MAPS).
    pub(crate) fn map_reports(&self) -> Vec<MapReport> {
        let sources: Vec<Arc<dyn MapSource>> = {
            let mut maps = self.inner.maps.lock().unwrap_or_else(|e| e.into_inner());
            maps.retain(|m| m.strong_count() > 0);
            maps.iter().filter_map(Weak::upgrade).collect()
        };
        let mut reports: Vec<MapReport> = sources.iter().map(|s| s.map_report()).collect();
        reports.sort_by(|a, b| (&a.map, &a.node).cmp(&(&b.map, &b.node)));
        reports.truncate(crate::report::MAX_REPORTED_MAPS);
        reports
    }

    /// Its live receive queues.
    pub(crate) fn inboxes(&self) -> Vec<Arc<Inbox>> {
        self.lock_inboxes()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Emits `wave`, on one of the bus's own channels, from the aether
    /// itself (named `source`): checked and counted like any emit.
    pub(crate) async fn emit_own(&self, mut wave: Wave, source: &str) -> Result<(), EmitError> {
        let now_ns = unix_nanos();
        wave.stamp_emission(&smol_str::SmolStr::new(source), 0, now_ns);
        let dropped = self.check(&mut wave, now_ns)?;
        self.publish(wave, dropped).await
    }

    /// The connection to the medium now: state, reconnects, slow-consumer
    /// events, malformed messages refused, outbox use. Read without locks.
    pub fn connection(&self) -> ConnectionStatus {
        self.inner.medium.status()
    }

    /// Every change of the connection from now on. The embedded medium has
    /// none: its receiver ends at once.
    pub fn connection_events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.medium.events()
    }

    /// Whether durable channels are configured: vibrators then report the
    /// waves they hand out ([`Aether::hand_out`]).
    pub(crate) fn has_durable_channels(&self) -> bool {
        self.inner.config.durability.is_enabled()
    }

    /// A vibrator (its queue `inbox`, counting into `stats`) hands `wave`
    /// to its application: a durable wave is acknowledged now. `false` if
    /// the vibrator handed out this wave already (a redelivery, or a
    /// replayed copy), which it then drops: counted as
    /// [`DropReason::Duplicate`] by the vibrator and the aether.
    pub(crate) fn hand_out(&self, inbox: u64, stats: &Counters, wave: &Wave) -> bool {
        let fresh = self.inner.medium.hand_out(inbox, wave);
        if !fresh {
            stats.dropped(DropReason::Duplicate);
            self.inner.stats.dropped(DropReason::Duplicate);
        }
        fresh
    }

    /// A vibrator (its queue `inbox`) went away without handing out
    /// `waves`: durable ones are not acknowledged, and come again.
    pub(crate) fn release<'a>(&self, inbox: u64, waves: impl Iterator<Item = &'a Wave>) {
        self.inner.medium.release(inbox, waves);
    }

    /// Carries a stamped wave that [`Aether::check`] admitted (`dropped`:
    /// what the checks made of it).
    #[inline]
    pub(crate) async fn publish(
        &self,
        wave: Wave,
        dropped: Option<DropReason>,
    ) -> Result<(), EmitError> {
        self.inner.medium.publish(wave, dropped).await
    }

    /// [`Aether::publish`] as far as it goes without waiting; the rest is
    /// for [`Aether::finish_publish`] (`Medium::start_publish`).
    #[inline(always)]
    pub(crate) fn start_publish(&self, wave: Wave, dropped: Option<DropReason>) -> Publishing {
        self.inner.medium.start_publish(wave, dropped)
    }

    /// Ends what [`Aether::start_publish`] began.
    pub(crate) async fn finish_publish(&self, publishing: Publishing) -> Result<(), EmitError> {
        self.inner.medium.finish_publish(publishing).await
    }

    /// Emits `wave` as a request and waits up to `timeout` for the first
    /// reply; `replies` is the asker's reply inbox, `admit` its checks.
    pub(crate) async fn request<'a>(
        &self,
        wave: Wave,
        timeout: std::time::Duration,
        replies: impl Future<Output = Result<&'a Arc<ReplyMux>, RequestError>>,
        admit: impl FnOnce(&mut Wave) -> Result<Option<DropReason>, EmitError>,
    ) -> Result<Wave, RequestError> {
        self.inner
            .medium
            .request(wave, timeout, replies, admit)
            .await
    }

    /// Whether its medium reaches other processes (NATS), not only this
    /// one's (embedded).
    pub(crate) fn crosses_processes(&self) -> bool {
        self.inner.medium.crosses_processes()
    }

    /// The settings it runs with.
    pub fn config(&self) -> &AetherConfig {
        &self.inner.config
    }

    /// Counters of every wave emitted into this aether, read without locks.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Counts an emit that passed the checks but that the medium refused
    /// (too large, a full outbox): emitted, not published.
    pub(crate) fn count_unpublished(&self) {
        self.inner.stats.unpublished();
    }

    /// Counts an emit refused by a vibrator's rate limit.
    pub(crate) fn count_rate_limited(&self) {
        self.inner.stats.rate_limited();
    }

    /// Counts an emit refused with `kind` (the caller is told), and logs
    /// the refusals at most once per [`REFUSALS_LOGGED_EVERY`]: the first
    /// at once, then, at the end of that time, how many came since (so the
    /// last of a burst are said too).
    #[cold]
    pub(crate) fn count_refused(&self, kind: EmitErrorKind) {
        self.inner.stats.refused(kind);
        let Ok(mut logged) = self.inner.refusals_logged.try_lock() else {
            return;
        };
        let now = std::time::Instant::now();
        let Some(at) = logged
            .at
            .filter(|at| now.duration_since(*at) < REFUSALS_LOGGED_EVERY)
        else {
            log_refusals(&self.inner, &mut logged, kind);
            return;
        };
        let scheduled = logged.tail.is_some();
        logged.tail = Some(kind);
        if scheduled {
            return;
        }
        // The rest of this burst is said when the quiet time ends.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = Arc::downgrade(&self.inner);
            runtime.spawn(async move {
                tokio::time::sleep_until((at + REFUSALS_LOGGED_EVERY).into()).await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let mut logged = inner
                    .refusals_logged
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(kind) = logged.tail {
                    log_refusals(&inner, &mut logged, kind);
                }
            });
        }
    }

    /// The aether's counters, for the reliability layer.
    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.inner.stats
    }

    /// The physics engine at work on this aether's deliveries: interference
    /// events as they happen, the resonance graph, and what it did.
    ///
    /// The engine starts on the first call (on a thread of its own, off the
    /// emit and receive paths) and runs until the aether is closed or
    /// dropped; until then nothing is observed and deliveries pay one relaxed
    /// atomic load. It observes at most `physics.max_waves_per_s` deliveries
    /// a second and skips (and counts) the rest. Over NATS, an aether's
    /// engine sees the waves its own vibrators receive; a gateway that
    /// resonates on `*` sees them all. See [`Physics`].
    pub fn physics(&self) -> Physics {
        if !self.is_closed() {
            self.inner.physics.activate();
        }
        Physics::new(self.inner.physics.clone())
    }

    pub(crate) fn physics_hub(&self) -> &Arc<PhysicsHub> {
        &self.inner.physics
    }

    /// Waits until every wave emitted so far has left this process: over
    /// NATS, the outbox is empty and the connection's buffer written to the
    /// server; on the embedded medium, the waves of durable channels handed
    /// out so far are marked taken in the durable outbox's file (so a
    /// killed process does not deliver them again). Call it before
    /// [`Aether::close`] or exit, or waves still on their way are lost.
    /// Fails with `Medium` if the connection is down for longer than
    /// `timeout`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let aether = aether_core::Aether::default();
    /// aether.flush(std::time::Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self, timeout: std::time::Duration) -> Result<(), EmitError> {
        self.inner.medium.flush(timeout).await
    }

    /// Drains the aether, as a client of NATS would before it goes: waits up
    /// to `timeout` until everything emitted so far has left the process
    /// ([`Aether::flush`]), then closes it ([`Aether::close`]) whether or not
    /// it all left. The one call to end with: `Err` says that waves may have
    /// been left unsent.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let aether = aether_core::Aether::default();
    /// aether.drain(std::time::Duration::from_secs(2)).await?;
    /// assert!(aether.is_closed());
    /// # Ok(()) }
    /// ```
    ///
    /// An aether that sends instance reports sends a last one, marked
    /// `leaving`, so that a gateway counts it as gone on purpose rather
    /// than lost.
    pub async fn drain(&self, timeout: std::time::Duration) -> Result<(), EmitError> {
        let start = std::time::Instant::now();
        let flushed = self.flush(timeout).await;
        if let Some(instance) = self.inner.reporting.get()
            && !self.is_closed()
        {
            let seq = self.next_report_seq();
            let report = InstanceReport {
                leaving: true,
                ..self.compose_report(instance, seq)
            };
            if self.send_report(instance, &report).await {
                let _ = self.flush(timeout.saturating_sub(start.elapsed())).await;
            }
        }
        self.close();
        flushed
    }

    /// The `seq` of the next instance report.
    pub(crate) fn next_report_seq(&self) -> u64 {
        self.inner.report_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Closes the aether: emits fail with `Closed`, and every vibrator's
    /// `receive` returns the waves already queued, then `None`. The physics
    /// engine stops, and its followers end. Waves still on their way are
    /// dropped with the connection: [`Aether::drain`] sends them first.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.physics.stop();
        self.inner.medium.close();
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
        if let Some(name) = listener.owner() {
            self.may_resonate(name, &pattern)?;
        }
        self.inner.medium.subscribe(pattern, listener).await
    }

    /// The aether's signatures and access rules.
    pub(crate) fn security(&self) -> &Arc<Security> {
        &self.inner.security
    }

    /// `Ok` if the ACL lets the vibrator `name` resonate on `pattern` (for
    /// hopping: on its base channel).
    pub(crate) fn may_resonate(&self, name: &str, pattern: &Channel) -> Result<(), ResonateError> {
        let security = &self.inner.security;
        if security.is_enabled() && !security.may_resonate(name, pattern) {
            return Err(ResonateError::new(
                ResonateErrorKind::Denied,
                format!(
                    "the ACL ([aether.security] acl) does not let {name:?} resonate on {:?}",
                    pattern.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// `Ok` if the ACL lets `source` emit on `channel` (for hopping: on its
    /// base channel).
    #[inline]
    pub(crate) fn may_emit(
        &self,
        source: Option<&str>,
        channel: &Channel,
    ) -> Result<(), EmitError> {
        let security = &self.inner.security;
        if security.is_enabled() && !security.may_emit(source, channel) {
            return Err(denied(source, channel));
        }
        Ok(())
    }

    pub(crate) fn unsubscribe(&self, ids: &[SubscriptionId]) {
        self.inner.medium.unsubscribe(ids);
    }

    /// Sends a reflection (made by `Wave::into_reflection`) to its source,
    /// on any medium.
    pub(crate) async fn send_reflection(&self, reflected: Wave) -> Result<(), EmitError> {
        if self.is_closed() {
            return Err(EmitError::new(
                EmitErrorKind::Closed,
                "the aether was closed; create a new one to emit again",
            ));
        }
        self.inner.medium.reflect(reflected).await
    }

    /// The checks every emit passes on every medium, in place: `Err` if
    /// refused, `Some(reason)` if accepted but dropped (and counted), `None`
    /// if measured and ready to route.
    #[inline(always)]
    pub(crate) fn check(
        &self,
        wave: &mut Wave,
        now_ns: u64,
    ) -> Result<Option<DropReason>, EmitError> {
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
        self.may_emit(wave.source(), wave.channel())?;
        let stats = &self.inner.stats;
        stats.emitted();
        match self.inner.life.judge(wave, now_ns) {
            Ok(()) => Ok(None),
            Err(reason) => {
                stats.dropped(reason);
                stats.unpublished();
                Ok(Some(reason))
            }
        }
    }
}

/// The refusal of a wave the ACL does not let its source emit.
#[cold]
fn denied(source: Option<&str>, channel: &Channel) -> EmitError {
    EmitError::new(
        EmitErrorKind::Denied,
        format!(
            "the ACL ([aether.security] acl) does not let {:?} emit on {:?}",
            source.unwrap_or("an unnamed source"),
            channel.as_str()
        ),
    )
}

impl Default for Aether {
    fn default() -> Self {
        Self::new(AetherConfig::default()).expect("the default configuration is valid")
    }
}

impl fmt::Debug for Aether {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aether")
            .field("medium", &self.inner.medium.name())
            .field("closed", &self.is_closed())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl crate::operator::sealed::Sealed for Aether {}

impl crate::operator::Operator for Aether {
    async fn make_durable_consumers(
        &self,
        consumers: &[crate::config::DurableConsumer],
    ) -> Result<(), crate::ConnectError> {
        self.inner.medium.make_durable_consumers(consumers).await
    }

    async fn durable_stream(&self) -> Result<crate::connection::StreamStatus, crate::ConnectError> {
        self.inner.medium.durable_stream().await
    }

    fn sealed_at_rest(&self, wave: &Wave) -> Wave {
        // Most channels are not sealed: no subject to build for them.
        if !self.inner.security.seals(wave.channel()) {
            return wave.clone();
        }
        let subject =
            crate::subject::channel_subject(&self.inner.config.nats.subject_prefix, wave.channel());
        self.inner
            .security
            .seal(&subject, wave)
            .unwrap_or_else(|| wave.clone())
    }

    fn open_at_rest(&self, wave: &mut Wave) -> Result<(), DropReason> {
        let subject =
            crate::subject::channel_subject(&self.inner.config.nats.subject_prefix, wave.channel());
        self.inner.security.open(&subject, wave)
    }

    fn acl_allows_emit(&self, source: Option<&str>, channel: &Channel) -> bool {
        self.may_emit(source, channel).is_ok()
    }
}
