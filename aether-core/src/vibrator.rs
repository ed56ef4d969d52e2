//! Vibrators: a service's endpoint on the aether.
//!
//! A [`Vibrator`] emits waves and resonates (subscribes) on channel patterns.
//! Waves it resonates with wait in its bounded receive queue until
//! [`Vibrator::receive`] takes them; the vibrator is also a [`Stream`] of
//! waves.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, Channel, Vibrator};
//! use serde_json::json;
//!
//! let aether = Aether::default();
//! let mut sender = Vibrator::create("sender", &aether).await?;
//! let mut receiver = Vibrator::create("receiver", &aether).await?;
//!
//! receiver.resonate_on(Channel::new("test")).await?;
//! sender.emit_wave(Channel::new("test"), json!({"data": "test"})).await?;
//!
//! let wave = receiver.receive().await.unwrap();
//! assert_eq!(wave.payload()["data"], "test");
//! assert_eq!(wave.source(), Some("sender"));
//! # Ok(()) }
//! ```

use std::{
    collections::VecDeque,
    fmt,
    future::poll_fn,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_core::Stream;
use serde::Serialize;
use smol_str::SmolStr;

use crate::{
    Aether, Channel, EmitError, EmitErrorKind, IntoPayload, RateLimit, ReflectionReason,
    RequestError, RequestErrorKind, ResonateError, ResonateErrorKind, VibratorError,
    VibratorErrorKind, Wave, WaveId,
    inbox::{Handler, Inbox},
    medium::{Listener, Publishing, SubscriptionId},
    physics::InterferenceFollower,
    rate_limit::LimitSlot,
    reflection::{self, MAX_REFLECTION_MESSAGE_BYTES},
    reply::{self, ReplyMux},
    stats::{DropReason, StatsSnapshot},
    wave::{process_nonce, unix_nanos},
};

pub use crate::names::MAX_NAME_BYTES;
use crate::names::check_name;

/// A service's endpoint on the aether.
///
/// Dropping it stops its resonance (unsubscribes) and discards what is
/// still queued for it.
pub struct Vibrator {
    emitter: Emitter,
    inbox: Arc<Inbox>,
    /// Waves taken from the inbox, handed out one by one.
    batch: VecDeque<Wave>,
    subscriptions: Vec<(Channel, Option<Arc<str>>, SubscriptionId)>,
    /// Its frequency hopping (`crate::hopping`); stops with the vibrator.
    hopping: crate::hopping::resonances::Hopping,
    /// Whether the aether has durable channels: each wave handed out is
    /// then reported ([`Aether::hand_out`]), which acknowledges a durable
    /// one.
    durable: bool,
    /// The consumer span of the wave handed out last, while spans are on
    /// ([`crate::spans`]), until [`Vibrator::span_of`] takes it; if nobody
    /// does, it ends when the next wave is handed out, or with the vibrator.
    receiving: std::sync::Mutex<Option<(WaveId, tracing::Span)>>,
}

/// A cloneable handle that emits with a vibrator's identity, for tasks that
/// emit while the vibrator receives elsewhere.
#[derive(Clone)]
pub struct Emitter {
    name: SmolStr,
    id: u64,
    aether: Aether,
    /// The vibrator's queue, whose counters count its emits too.
    inbox: Arc<Inbox>,
    /// Its resonance on its reflection channel, made when it first emits a
    /// wave that reflects on failure; shared with the vibrator, which ends
    /// it.
    reflections: Arc<tokio::sync::OnceCell<SubscriptionId>>,
    /// Its emit rate limit, shared with the vibrator and its other emitters.
    limit: Arc<LimitSlot>,
    /// Its reply inbox for requests, shared with the vibrator and its other
    /// emitters.
    replies: Arc<Replies>,
}

/// A vibrator's reply inbox, made at its first request and shared by the
/// vibrator and its emitters; it resonates until the last of them is gone.
struct Replies {
    aether: Aether,
    cell: OnceLock<(Arc<ReplyMux>, SubscriptionId)>,
}

impl Drop for Replies {
    fn drop(&mut self) {
        if let Some((_, id)) = self.cell.get() {
            self.aether.unsubscribe(&[*id]);
        }
    }
}

/// Options of a new vibrator; see [`Vibrator::builder`].
#[derive(Clone)]
pub struct VibratorBuilder {
    name: String,
    noise_floor: Option<f64>,
    skip_own_waves: bool,
    queue_capacity: Option<usize>,
    rate_limit: Option<RateLimit>,
    handler: Option<Handler>,
}

impl fmt::Debug for VibratorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VibratorBuilder")
            .field("name", &self.name)
            .field("noise_floor", &self.noise_floor)
            .field("skip_own_waves", &self.skip_own_waves)
            .field("queue_capacity", &self.queue_capacity)
            .field("rate_limit", &self.rate_limit)
            .field("on_wave", &self.handler.is_some())
            .finish()
    }
}

impl VibratorBuilder {
    /// Runs `handler` on each wave the vibrator resonates with, where the
    /// wave arrives, instead of queueing it for [`Vibrator::receive`]: on
    /// NATS in the connection's receiving task, as each frame or message
    /// is decoded; on the embedded medium in the emitting task, within
    /// `emit`. No queue, no hand-off to another task, no wake-up: the
    /// fastest way to take waves (Zenoh's callback subscribers work so).
    ///
    /// The handler must not block: while it runs, nothing else arrives on
    /// that connection (NATS) or the emitter waits (embedded). Hand longer
    /// work to a task or a channel of your own. It may run on several
    /// threads at once (waves of two resonances, or of two emitters), so
    /// it is `Fn + Send + Sync`. The noise floor, own-wave skipping and
    /// groups apply as to a queue; a handler that panics on a wave is
    /// counted (`handler_panics` in [`Vibrator::stats`] and the aether's
    /// stats, `aether_handler_panics_total`) and logged, and gets the next
    /// wave as before. [`Vibrator::receive`] then gives `None` once the
    /// aether closes, and nothing before.
    ///
    /// Not on an aether with durable channels (`InvalidSetting`): a
    /// durable wave is acknowledged when `receive` hands it out.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// use aether_core::{Aether, Vibrator, Wave};
    ///
    /// let aether = Aether::default();
    /// let seen = Arc::new(AtomicU64::new(0));
    /// let counter = seen.clone();
    /// let mut meter = Vibrator::builder("meter")
    ///     .on_wave(move |wave: Wave| {
    ///         counter.fetch_add(wave.payload_bytes().len() as u64, Ordering::Relaxed);
    ///     })
    ///     .create(&aether)
    ///     .await?;
    /// meter.resonate_on("sensors.*").await?;
    ///
    /// let sensor = Vibrator::create("sensor", &aether).await?;
    /// sensor.emit_wave("sensors.kitchen", "21.5").await?;
    /// assert_eq!(seen.load(Ordering::Relaxed), 6); // "21.5" as JSON, quotes included
    /// # Ok(()) }
    /// ```
    pub fn on_wave(mut self, handler: impl Fn(Wave) + Send + Sync + 'static) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }

    /// Limits how fast it emits ([`crate::rate_limit`]): an emit over the
    /// limit fails with [`EmitErrorKind::RateLimited`]. Default: no limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Waves arriving weaker than this are not delivered (and are counted).
    /// In `[0, 1]`; default: the aether's `default_noise_floor`.
    pub fn noise_floor(mut self, floor: f64) -> Self {
        self.noise_floor = Some(floor);
        self
    }

    /// Whether to skip the waves this vibrator emits itself (default: no).
    pub fn skip_own_waves(mut self, skip: bool) -> Self {
        self.skip_own_waves = skip;
        self
    }

    /// Capacity of its receive queue; default: the aether's
    /// `channel_buffer_size`.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = Some(capacity);
        self
    }

    /// Creates the vibrator on `aether`.
    pub async fn create(self, aether: &Aether) -> Result<Vibrator, VibratorError> {
        self.build(aether)
    }

    /// Creates the vibrator on `aether`, without waiting.
    pub fn build(self, aether: &Aether) -> Result<Vibrator, VibratorError> {
        check_name(&self.name, VibratorErrorKind::InvalidName, "vibrator name")?;
        let floor = self
            .noise_floor
            .unwrap_or(aether.config().default_noise_floor);
        check_noise_floor(floor)?;
        let capacity = self
            .queue_capacity
            .unwrap_or(aether.config().channel_buffer_size);
        if capacity == 0 {
            return Err(VibratorError::new(
                VibratorErrorKind::InvalidSetting,
                "queue_capacity must be at least 1",
            ));
        }
        if self.handler.is_some() && aether.has_durable_channels() {
            return Err(VibratorError::new(
                VibratorErrorKind::InvalidSetting,
                "on_wave is not for an aether with durable channels: a durable wave is \
                 acknowledged when receive() hands it out; take waves with receive() there",
            ));
        }
        let id = next_vibrator_id();
        let name = SmolStr::new(self.name);
        let inbox = Arc::new(Inbox::new(
            id,
            name.clone(),
            aether.physics_hub().clone(),
            capacity,
            floor,
            self.skip_own_waves,
            self.handler,
        ));
        if !aether.register_inbox(&inbox) {
            return Err(closed(VibratorErrorKind::Closed));
        }
        let limit = Arc::new(LimitSlot::default());
        limit.set(self.rate_limit);
        Ok(Vibrator {
            emitter: Emitter {
                name,
                id,
                aether: aether.clone(),
                inbox: inbox.clone(),
                reflections: Arc::default(),
                limit,
                replies: Arc::new(Replies {
                    aether: aether.clone(),
                    cell: OnceLock::new(),
                }),
            },
            inbox,
            batch: VecDeque::new(),
            receiving: std::sync::Mutex::new(None),
            subscriptions: Vec::new(),
            hopping: Default::default(),
            durable: aether.has_durable_channels(),
        })
    }
}

fn next_vibrator_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (process_nonce() << 32) | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF)
}

fn closed<K: Copy>(kind: K) -> crate::Error<K> {
    crate::Error::new(kind, "the aether was closed; create a new one")
}

fn check_noise_floor(floor: f64) -> Result<(), VibratorError> {
    if (0.0..=1.0).contains(&floor) {
        Ok(())
    } else {
        Err(VibratorError::new(
            VibratorErrorKind::InvalidSetting,
            format!("noise_floor {floor} is out of range: it must be in [0, 1]"),
        ))
    }
}

impl Vibrator {
    /// Creates a vibrator named `name` (`A-Z a-z 0-9 _ - .`, at most 64
    /// bytes) with the aether's default settings.
    pub async fn create(name: impl Into<String>, aether: &Aether) -> Result<Self, VibratorError> {
        Self::builder(name).create(aether).await
    }

    /// Like [`Vibrator::create`], without waiting.
    pub fn new(name: impl Into<String>, aether: &Aether) -> Result<Self, VibratorError> {
        Self::builder(name).build(aether)
    }

    /// Options for a new vibrator.
    pub fn builder(name: impl Into<String>) -> VibratorBuilder {
        VibratorBuilder {
            name: name.into(),
            noise_floor: None,
            skip_own_waves: false,
            queue_capacity: None,
            rate_limit: None,
            handler: None,
        }
    }

    /// Its name, which its waves carry as their source.
    pub fn name(&self) -> &str {
        &self.emitter.name
    }

    /// A handle that emits as this vibrator.
    pub fn emitter(&self) -> Emitter {
        self.emitter.clone()
    }

    /// The aether it is on.
    pub fn aether(&self) -> &Aether {
        &self.emitter.aether
    }

    /// Resonates on `pattern`: waves on matching channels are delivered to
    /// this vibrator, once each however many of its patterns match.
    pub async fn resonate_on(&mut self, pattern: impl Into<Channel>) -> Result<(), ResonateError> {
        self.subscribe(pattern.into(), None).await
    }

    /// Resonates on `pattern` as a member of `group`: each matching wave goes
    /// to one member of the group, in turn (like a NATS queue group).
    pub async fn resonate_in_group(
        &mut self,
        pattern: impl Into<Channel>,
        group: &str,
    ) -> Result<(), ResonateError> {
        check_name(group, ResonateErrorKind::InvalidGroup, "group name")?;
        self.subscribe(pattern.into(), Some(Arc::from(group))).await
    }

    async fn subscribe(
        &mut self,
        pattern: Channel,
        group: Option<Arc<str>>,
    ) -> Result<(), ResonateError> {
        pattern
            .validate()
            .map_err(|e| ResonateError::with_source(ResonateErrorKind::InvalidChannel, e))?;
        let listener = match &group {
            None => Listener::Inbox(self.inbox.clone()),
            Some(group) => Listener::Group(group.clone(), self.inbox.clone()),
        };
        let id = self.aether().subscribe(pattern.clone(), listener).await?;
        self.subscriptions.push((pattern, group, id));
        Ok(())
    }

    /// Stops resonating on `pattern` (alone or in a group). Waves already
    /// queued stay. `NotResonating` if it did not resonate on it.
    pub async fn stop_resonating(
        &mut self,
        pattern: impl Into<Channel>,
    ) -> Result<(), ResonateError> {
        let pattern = pattern.into();
        let ids: Vec<SubscriptionId> = self
            .subscriptions
            .iter()
            .filter(|(p, _, _)| *p == pattern)
            .map(|(_, _, id)| *id)
            .collect();
        if ids.is_empty() {
            return Err(ResonateError::new(
                ResonateErrorKind::NotResonating,
                format!(
                    "{:?} does not resonate on {:?}",
                    self.name(),
                    pattern.as_str()
                ),
            ));
        }
        self.subscriptions.retain(|(p, _, _)| *p != pattern);
        self.aether().unsubscribe(&ids);
        Ok(())
    }

    /// The patterns it resonates on.
    pub fn patterns(&self) -> impl Iterator<Item = &Channel> + '_ {
        self.subscriptions.iter().map(|(p, _, _)| p)
    }

    /// The next wave; `None` once the aether is closed and the queue drained.
    ///
    /// Wakes when a wave arrives; no polling.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes (in a
    /// `select!`), no wave is lost; it stays queued for the next call.
    // Not an `async fn`: the poll itself, without a layer that would move
    // each wave once more on its way out.
    pub fn receive(&mut self) -> impl Future<Output = Option<Wave>> + Send + '_ {
        poll_fn(move |cx| self.poll_wave(cx))
    }

    fn poll_wave(&mut self, cx: &mut Context<'_>) -> Poll<Option<Wave>> {
        let wave = if self.durable {
            self.poll_wave_durable(cx)
        } else if let Some(wave) = self.batch.pop_front() {
            Poll::Ready(Some(wave))
        } else {
            self.inbox
                .poll_take(cx, &mut self.batch)
                .map(|_| self.batch.pop_front())
        };
        if let Poll::Ready(Some(wave)) = &wave {
            self.received(wave);
        }
        wave
    }

    /// Opens the consumer span of `wave`, handed out now, while spans are on
    /// (one atomic load while they are off).
    #[inline]
    fn received(&mut self, wave: &Wave) {
        if crate::spans::is_installed() {
            self.open_receive_span(wave);
        }
    }

    #[cold]
    #[inline(never)]
    fn open_receive_span(&mut self, wave: &Wave) {
        let span = crate::spans::receive_span(wave, self.name());
        *self.receiving.get_mut().unwrap_or_else(|e| e.into_inner()) = Some((wave.id(), span));
    }

    /// [`Vibrator::poll_wave`] on an aether with durable channels: a durable
    /// wave is acknowledged as it is handed out, and a copy of one already
    /// handed out (a redelivery) is dropped.
    #[cold]
    fn poll_wave_durable(&mut self, cx: &mut Context<'_>) -> Poll<Option<Wave>> {
        loop {
            if self.batch.is_empty()
                && !std::task::ready!(self.inbox.poll_take(cx, &mut self.batch))
            {
                return Poll::Ready(None);
            }
            if let Some(wave) = self.batch.pop_front()
                && self
                    .aether()
                    .hand_out(self.inbox.id(), self.inbox.stats(), &wave)
            {
                return Poll::Ready(Some(wave));
            }
        }
    }

    /// The consumer span in which to handle `wave`, which this vibrator
    /// received: its parent is the span that emitted the wave, so the trace
    /// goes on here, and what is emitted inside it continues it
    /// ([`crate::spans`]). For the wave handed out last, it is the span that
    /// receiving it opened (one consumer span per wave received), which then
    /// ends when the returned span is dropped: handle the wave inside it
    /// (`tracing::Instrument`). For another wave, a new span.
    /// `Span::none()` while tracing is off.
    pub fn span_of(&self, wave: &Wave) -> tracing::Span {
        let mut receiving = self.receiving.lock().unwrap_or_else(|e| e.into_inner());
        match receiving.take() {
            Some((id, span)) if id == wave.id() => span,
            other => {
                *receiving = other;
                crate::spans::receive_span(wave, self.name())
            }
        }
    }

    /// The next wave if one is queued, without waiting.
    pub fn try_receive(&mut self) -> Option<Wave> {
        loop {
            if self.batch.is_empty() {
                self.inbox.try_take(&mut self.batch);
            }
            let wave = self.batch.pop_front()?;
            if !self.durable
                || self
                    .aether()
                    .hand_out(self.inbox.id(), self.inbox.stats(), &wave)
            {
                self.received(&wave);
                return Some(wave);
            }
        }
    }

    /// How many waves wait for it.
    pub fn queued(&self) -> usize {
        self.batch.len() + self.inbox.len()
    }

    /// Its noise floor: waves arriving weaker are not delivered.
    pub fn noise_floor(&self) -> f64 {
        self.inbox.noise_floor()
    }

    /// Changes its noise floor (in `[0, 1]`) while it runs.
    pub fn set_noise_floor(&self, floor: f64) -> Result<(), VibratorError> {
        check_noise_floor(floor)?;
        self.inbox.set_noise_floor(floor);
        Ok(())
    }

    /// Sets or lifts its emit rate limit while it runs, for it and all its
    /// emitters ([`crate::rate_limit`]). A new limit starts with a full
    /// burst.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.emitter.limit.set(limit);
    }

    /// Its emit rate limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.emitter.limit.get()
    }

    /// What it received and dropped so far, read without locks: `delivered`
    /// counts waves put in its queue, drops count waves it did not get.
    pub fn stats(&self) -> StatsSnapshot {
        self.inbox.stats().snapshot()
    }

    /// Emits `wave`; see [`Emitter::emit`].
    // Not an `async fn`: the emitter's future itself, without a layer that
    // would move the wave once more.
    pub fn emit(&self, wave: Wave) -> impl Future<Output = Result<WaveId, EmitError>> + Send + '_ {
        self.emitter.emit(wave)
    }

    /// Emits a full-strength wave on `channel` carrying `payload` as JSON.
    pub async fn emit_wave(
        &self,
        channel: impl Into<Channel>,
        payload: impl Serialize,
    ) -> Result<WaveId, EmitError> {
        self.emitter.emit_wave(channel, payload).await
    }

    /// Sends `wave`, which this vibrator received, back to its source as a
    /// reflection carrying `reason`: a refusal, or a handler error (a
    /// negative acknowledgement). See [`Emitter::reflect`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, ReflectionReason, Vibrator, Wave};
    ///
    /// let aether = Aether::default();
    /// let mut inventory = Vibrator::create("inventory", &aether).await?;
    /// inventory.resonate_on("orders.*").await?;
    /// let mut shop = Vibrator::create("shop", &aether).await?;
    /// let order = Wave::builder("orders.created").reflect_on_failure(true).json(&42);
    /// shop.emit(order.build()?).await?;
    ///
    /// let order = inventory.receive().await.unwrap();
    /// inventory.reflect(&order, ReflectionReason::Refused("out of stock".into())).await?;
    ///
    /// let refused = shop.receive().await.unwrap();
    /// assert_eq!(refused.reflection().and_then(|r| r.message()), Some("out of stock"));
    /// assert_eq!(refused.payload(), 42);
    /// # Ok(()) }
    /// ```
    pub async fn reflect(&self, wave: &Wave, reason: ReflectionReason) -> Result<(), EmitError> {
        self.emitter.reflect(wave, reason).await
    }

    /// The interference events of the channels that match `pattern`, from
    /// now on: cancellations (conflicting messages), standing waves (a loop
    /// or a stuck producer), constructive interference (duplicates). Starts
    /// the aether's physics engine if it does not run yet
    /// ([`Aether::physics`]).
    ///
    /// Over NATS, an aether's engine sees the waves its own vibrators
    /// receive: follow from an aether whose vibrators hear those channels
    /// (a gateway resonating on `*` sees them all).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, InterferencePattern, Phase, Vibrator, Wave};
    ///
    /// let aether = Aether::default();
    /// let mut billing = Vibrator::create("billing", &aether).await?;
    /// billing.resonate_on("orders.*").await?;
    /// let mut conflicts = billing.follow_interference("orders.*")?;
    ///
    /// let review = Vibrator::create("review", &aether).await?;
    /// for phase in [Phase::ASSERT, Phase::RETRACT] {
    ///     let verdict = Wave::builder("orders.review").correlation_key("order-42").phase(phase);
    ///     review.emit(verdict.build()?).await?;
    /// }
    /// let event = conflicts.next().await.unwrap();
    /// assert_eq!(event.pattern, InterferencePattern::Cancellation);
    /// # Ok(()) }
    /// ```
    pub fn follow_interference(
        &self,
        pattern: impl Into<Channel>,
    ) -> Result<InterferenceFollower, ResonateError> {
        let pattern = pattern.into();
        pattern
            .validate()
            .map_err(|e| ResonateError::with_source(ResonateErrorKind::InvalidChannel, e))?;
        if self.aether().is_closed() {
            return Err(closed(ResonateErrorKind::Closed));
        }
        let events = self.aether().physics().events();
        Ok(InterferenceFollower::new(events, pattern))
    }

    /// Replies to `request` on its reply channel; see [`Emitter::reply`].
    pub async fn reply(
        &self,
        request: &Wave,
        payload: impl IntoPayload,
    ) -> Result<WaveId, EmitError> {
        self.emitter.reply(request, payload).await
    }

    /// Replies to `request` with `payload` as JSON (any `impl Serialize`, a
    /// derived struct too), as `emit_wave` emits; see [`Emitter::reply`].
    pub async fn reply_wave(
        &self,
        request: &Wave,
        payload: impl Serialize,
    ) -> Result<WaveId, EmitError> {
        self.emitter.reply_wave(request, payload).await
    }

    /// Emits `wave` as a request and waits for the first reply; see
    /// [`Emitter::request`].
    pub async fn request(&self, wave: Wave) -> Result<Wave, RequestError> {
        self.emitter.request(wave).await
    }

    /// Emits `payload` (as JSON) as a request on `channel` and waits for the
    /// first reply; see [`Emitter::request_wave`].
    pub async fn request_wave(
        &self,
        channel: impl Into<Channel>,
        payload: impl Serialize,
    ) -> Result<Wave, RequestError> {
        self.emitter.request_wave(channel, payload).await
    }

    /// Emits `wave` as a request and waits up to `timeout` for the first
    /// reply; see [`Emitter::request_with_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the request; a late reply is counted as
    /// unrouted.
    pub async fn request_with_timeout(
        &self,
        wave: Wave,
        timeout: Duration,
    ) -> Result<Wave, RequestError> {
        self.emitter.request_with_timeout(wave, timeout).await
    }
}

/// What the hopping module needs of a vibrator.
impl Vibrator {
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    pub(crate) fn hopping(&self) -> &crate::hopping::resonances::Hopping {
        &self.hopping
    }

    pub(crate) fn hopping_mut(&mut self) -> &mut crate::hopping::resonances::Hopping {
        &mut self.hopping
    }

    /// Emits `wave` stamped at `now_ns`; see [`Emitter::emit_at`].
    pub(crate) async fn emit_at(&self, wave: Wave, now_ns: u64) -> Result<WaveId, EmitError> {
        self.emitter.emit_at(wave, now_ns).await
    }
}

/// Who asks to emit: an application through the public calls, or the
/// aether's own paths (replies, hopping), which alone use the bus's own
/// channels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Application,
    Own,
}

/// `Ok` unless `channel` is one of the bus's own, which applications may
/// not emit on: a forged reply to another's request or a forged reflection
/// would start there.
#[inline]
fn application_channel(channel: &Channel) -> Result<(), EmitError> {
    if channel.is_system() {
        return Err(EmitError::new(
            EmitErrorKind::InvalidChannel,
            format!(
                "{:?} is one of the bus's own channels (its first token starts with `_`: \
                 replies, reflections, probes, hopping); emit on an application channel, \
                 answer a request with reply, and hop with emit_hopping",
                channel.as_str()
            ),
        ));
    }
    Ok(())
}

impl Emitter {
    /// Emits `wave` as a request and waits for the first reply, up to the
    /// aether's `request_timeout_ms`. An emitter asks as its vibrator does:
    /// the reply comes to the vibrator's reply inbox, which lives as long as
    /// the vibrator or one of its emitters.
    pub async fn request(&self, wave: Wave) -> Result<Wave, RequestError> {
        let timeout = self.aether.config().request_timeout;
        self.request_with_timeout(wave, timeout).await
    }

    /// Emits `payload` (as JSON) as a request on `channel` and waits for the
    /// first reply, up to the aether's `request_timeout_ms`: the request
    /// counterpart of [`Emitter::emit_wave`].
    pub async fn request_wave(
        &self,
        channel: impl Into<Channel>,
        payload: impl Serialize,
    ) -> Result<Wave, RequestError> {
        let bytes = serde_json::to_vec(&payload).map_err(|e| {
            RequestError::with_source(
                RequestErrorKind::Emit,
                EmitError::with_source(EmitErrorKind::Payload, e),
            )
        })?;
        self.request(Wave::new(channel, bytes)).await
    }

    /// Emits `wave` as a request and waits up to `timeout` for the first
    /// reply. Fails with `NoResponders` at once if nobody resonates on its
    /// channel, and with `TimedOut` if no reply comes in time. A request
    /// neither diffracts nor reflects.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future forgets the request; a late reply is counted as
    /// unrouted.
    pub async fn request_with_timeout(
        &self,
        wave: Wave,
        timeout: Duration,
    ) -> Result<Wave, RequestError> {
        application_channel(wave.channel())?;
        self.request_on(wave, timeout).await
    }

    /// A request on any channel, the bus's own included: for the aether's
    /// own protocols (replicated state).
    pub(crate) async fn request_on(
        &self,
        mut wave: Wave,
        timeout: Duration,
    ) -> Result<Wave, RequestError> {
        wave.clear_tracking();
        if self.limit.check(&self.name).is_err() {
            Box::pin(self.wait_for_turn()).await?;
        }
        self.aether
            .request(wave, timeout, self.reply_mux(), |wave| {
                self.admit_in_place(wave, unix_nanos())
            })
            .await
    }

    async fn reply_mux(&self) -> Result<&Arc<ReplyMux>, RequestError> {
        let replies = &self.replies.cell;
        if let Some((mux, _)) = replies.get() {
            return Ok(mux);
        }
        let mux = Arc::new(ReplyMux::new(self.id));
        let id = self
            .aether
            .subscribe(mux.pattern(), Listener::Replies(mux.clone()))
            .await
            .map_err(|_| closed(RequestErrorKind::Closed))?;
        if let Err((_, id)) = replies.set((mux, id)) {
            // Another request got there first; keep its subscription.
            self.aether.unsubscribe(&[id]);
        }
        Ok(&replies.get().expect("set above").0)
    }

    /// The name its waves carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its vibrator's statistics ([`Vibrator::stats`]), read without locks:
    /// for a thread that emits while another receives.
    pub fn stats(&self) -> StatsSnapshot {
        self.inbox.stats().snapshot()
    }

    /// The aether it emits into.
    pub(crate) fn aether(&self) -> &Aether {
        &self.aether
    }

    /// Emits `wave` into the aether.
    ///
    /// A fresh wave (no hops yet) is stamped with this vibrator as its source
    /// and the current time. The channel must be valid and concrete, or the
    /// wave is refused with `InvalidChannel` and nothing is sent. A wave past
    /// `max_propagation` hops, or already weaker than `min_amplitude`, is
    /// accepted but dropped and counted, as docs/guide/contract.md's attenuation rules say.
    ///
    /// A wave that [diffracts](crate::WaveBuilder::diffracting) bends to a
    /// parent channel when nobody resonates on its own; one that
    /// [reflects on failure](crate::WaveBuilder::reflect_on_failure) comes
    /// back to this vibrator if it cannot be delivered (from its first such
    /// wave on, the vibrator resonates on its reflection channel).
    ///
    /// Over the vibrator's [rate limit](Vibrator::set_rate_limit), fails
    /// with [`EmitErrorKind::RateLimited`] and sends nothing: at once, or
    /// once its turn is further than the limit's
    /// [wait](RateLimit::waiting_up_to).
    pub fn emit(&self, wave: Wave) -> impl Future<Output = Result<WaveId, EmitError>> + Send + '_ {
        self.emit_stamped(wave, None, Path::Application)
    }

    /// Emits `wave` like [`Emitter::emit`], on any channel, the bus's own
    /// included: for the aether's own protocols (replicated state).
    pub(crate) fn emit_own(
        &self,
        wave: Wave,
    ) -> impl Future<Output = Result<WaveId, EmitError>> + Send + '_ {
        self.emit_stamped(wave, None, Path::Own)
    }

    /// Emits `wave` like [`Emitter::emit`], stamped at `now_ns` instead of
    /// the clock's reading now: for frequency hopping, whose wire channel is
    /// chosen from that same time.
    pub(crate) fn emit_at(
        &self,
        wave: Wave,
        now_ns: u64,
    ) -> impl Future<Output = Result<WaveId, EmitError>> + Send + '_ {
        self.emit_stamped(wave, Some(now_ns), Path::Own)
    }

    /// [`Emitter::emit`], stamped at `at`, or when the clock is read after
    /// the rate limit and the reflection channel (`None`).
    async fn emit_stamped(
        &self,
        mut wave: Wave,
        at: Option<u64>,
        path: Path,
    ) -> Result<WaveId, EmitError> {
        // Every refusal is counted by its kind (`refused`).
        if path == Path::Application {
            application_channel(wave.channel()).map_err(|e| self.refused(e))?;
        }
        if self.limit.check(&self.name).is_err() {
            Box::pin(self.wait_for_turn())
                .await
                .map_err(|e| self.refused(e))?;
        }
        // The rare paths' futures are boxed, so that they do not swell every
        // emit's future (6.8 KB with them inline, 1.5 KB without). The NATS
        // publish stays inline: boxing it costs an allocation per emit,
        // which measured slower than the copy it saves.
        if wave.reflects_on_failure() && wave.propagation_count() == 0 {
            Box::pin(self.listen_for_reflections())
                .await
                .map_err(|e| self.refused(e))?;
        }
        let now_ns = at.unwrap_or_else(unix_nanos);
        // Checked in place, and on the fast path not moved again.
        let dropped = self
            .admit_in_place(&mut wave, now_ns)
            .map_err(|e| self.refused(e))?;
        let id = wave.id();
        match self.aether.start_publish(wave, dropped) {
            // The embedded medium's common wave: in the queues already.
            Publishing::Done => {}
            // A wave that did not go out (a full or unwritable outbox) is
            // not counted as published by this vibrator.
            publishing => self.aether.finish_publish(publishing).await.map_err(|e| {
                self.inbox.stats().unpublished();
                self.aether.count_unpublished();
                self.refused(e)
            })?,
        }
        Ok(id)
    }

    /// `error`, an emit's refusal, counted by its kind.
    #[cold]
    fn refused(&self, error: EmitError) -> EmitError {
        self.inbox.stats().refused(error.kind());
        self.aether.count_refused(error.kind());
        error
    }

    /// Over the rate limit: waits for the emit's turn if the limit shapes
    /// ([`RateLimit::waiting_up_to`]), else (or past that wait) refuses;
    /// a wait and a refusal counted by the vibrator and the aether.
    #[cold]
    async fn wait_for_turn(&self) -> Result<(), EmitError> {
        match self.limit.wait_turn(&self.name).await {
            Ok(false) => Ok(()),
            Ok(true) => {
                self.inbox.stats().rate_limit_waited();
                self.aether.counters().rate_limit_waited();
                Ok(())
            }
            Err(error) => {
                self.inbox.stats().rate_limited();
                self.aether.count_rate_limited();
                Err(error)
            }
        }
    }

    /// Resonates on this vibrator's reflection channel, once: a fresh wave
    /// it emits names it as its origin, so its reflections come back there.
    #[cold]
    async fn listen_for_reflections(&self) -> Result<(), EmitError> {
        if self.reflections.initialized() || self.inbox.is_closed() {
            return Ok(());
        }
        self.reflections
            .get_or_try_init(|| {
                let listener = Listener::Inbox(self.inbox.clone());
                let own = reflection::channel_of(Some(&self.name), self.id)
                    .expect("a vibrator has a name and an id");
                self.aether.subscribe(own, listener)
            })
            .await
            .map_err(|e| {
                let kind = match e.kind() {
                    ResonateErrorKind::Closed => EmitErrorKind::Closed,
                    _ => EmitErrorKind::Medium,
                };
                EmitError::with_source(kind, e)
            })?;
        Ok(())
    }

    /// Sends `wave`, which a vibrator received, back to its source as a
    /// reflection carrying `reason` (a [`Refused`](ReflectionReason::Refused)
    /// or a [`HandlerError`](ReflectionReason::HandlerError), typically): the
    /// same id, payload and correlation key, on the channel it arrived on,
    /// phase shifted by π ([`crate::reflection`]). Counted as emitted, and
    /// as `reflected` by the aether.
    ///
    /// Fails with [`EmitErrorKind::Reflection`] if the wave was not emitted
    /// with `reflect_on_failure(true)` (its source does not listen for
    /// reflections; a reflection itself never reflects), if its source is
    /// unknown (a wave from a client that is not a vibrator), or if the
    /// reason's message is longer than 1024 bytes.
    pub async fn reflect(&self, wave: &Wave, reason: ReflectionReason) -> Result<(), EmitError> {
        let refuse = |why: String| Err(EmitError::new(EmitErrorKind::Reflection, why));
        if !wave.reflects_on_failure() {
            return refuse(format!(
                "wave {} was not emitted with reflect_on_failure(true): its source does not \
                 listen for reflections",
                wave.id()
            ));
        }
        if wave.origin() == 0 {
            return refuse(format!(
                "wave {} has no known source vibrator to reflect to",
                wave.id()
            ));
        }
        let len = reason.message().map_or(0, str::len);
        if len > MAX_REFLECTION_MESSAGE_BYTES {
            return refuse(format!(
                "the reflection message is {len} bytes, the limit is \
                 {MAX_REFLECTION_MESSAGE_BYTES}"
            ));
        }
        let reflected = wave.clone().into_reflection(reason, wave.channel().clone());
        self.aether.send_reflection(reflected).await?;
        // It goes out under its source's origin, not this vibrator's.
        self.inbox.stats().emitted();
        self.inbox.stats().unpublished();
        Ok(())
    }

    /// Stamps a wave with this vibrator as its source and checks it, in
    /// place: `Some(reason)` if it was accepted but dropped (and counted).
    #[inline]
    fn admit_in_place(
        &self,
        wave: &mut Wave,
        now_ns: u64,
    ) -> Result<Option<DropReason>, EmitError> {
        wave.stamp_emission(&self.name, self.id, now_ns);
        let _span = crate::spans::emitting(wave, &self.name);
        let dropped = self.aether.check(wave, now_ns)?;
        let stats = self.inbox.stats();
        stats.emitted();
        if let Some(reason) = dropped {
            stats.dropped(reason);
            stats.unpublished();
        } else if crate::subject::unobservable(wave.channel()) {
            stats.unpublished();
        }
        Ok(dropped)
    }

    /// Emits a full-strength wave on `channel` carrying `payload` as JSON.
    pub async fn emit_wave(
        &self,
        channel: impl Into<Channel>,
        payload: impl Serialize,
    ) -> Result<WaveId, EmitError> {
        let bytes = crate::wave::json_pooled(&payload)
            .map_err(|e| EmitError::with_source(EmitErrorKind::Payload, e))?;
        self.emit(Wave::new(channel, bytes)).await
    }

    /// Replies to `request` with `payload` as JSON (any `impl Serialize`),
    /// as [`Emitter::emit_wave`] emits.
    pub async fn reply_wave(
        &self,
        request: &Wave,
        payload: impl Serialize,
    ) -> Result<WaveId, EmitError> {
        let bytes = crate::wave::json_pooled(&payload)
            .map_err(|e| EmitError::with_source(EmitErrorKind::Payload, e))?;
        self.reply(request, bytes).await
    }

    /// Replies to `request` on its reply channel, with its correlation key.
    pub async fn reply(
        &self,
        request: &Wave,
        payload: impl IntoPayload,
    ) -> Result<WaveId, EmitError> {
        let reply_to = request.reply_to().ok_or_else(|| {
            EmitError::new(
                EmitErrorKind::NotARequest,
                format!(
                    "wave {} is not a request: it has no reply channel",
                    request.id()
                ),
            )
        })?;
        // A reply channel off the wire is another's word: of the bus's own
        // channels, only a reply inbox may be one.
        if reply_to.is_system() && !reply::is_reply_channel(reply_to) {
            return Err(EmitError::new(
                EmitErrorKind::InvalidChannel,
                format!(
                    "wave {} asks for its reply on {:?}, one of the bus's own channels \
                     that is not a reply inbox; not answered",
                    request.id(),
                    reply_to.as_str()
                ),
            ));
        }
        let wave = Wave::builder(reply_to.clone())
            .correlation_key(request.correlation_key())
            .payload(payload)
            .build()
            .map_err(|e| EmitError::with_source(EmitErrorKind::InvalidChannel, e))?;
        self.emit_stamped(wave, None, Path::Own).await
    }
}

impl Stream for Vibrator {
    type Item = Wave;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Wave>> {
        self.get_mut().poll_wave(cx)
    }
}

impl Drop for Vibrator {
    fn drop(&mut self) {
        let mut ids: Vec<SubscriptionId> =
            self.subscriptions.iter().map(|(_, _, id)| *id).collect();
        if let Some(id) = self.emitter.reflections.get() {
            ids.push(*id);
        }
        self.aether().unsubscribe(&ids);
        self.aether().deregister_inbox(self.inbox.id());
        self.inbox.close();
        if self.durable {
            // What it never handed out is not acknowledged: durable waves
            // go to another resonator, or come again later.
            let mut queued = VecDeque::new();
            self.inbox.try_take(&mut queued);
            let left = self.batch.iter().chain(queued.iter());
            self.emitter.aether.release(self.inbox.id(), left);
        }
    }
}

impl fmt::Debug for Vibrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vibrator")
            .field("name", &self.name())
            .field("patterns", &self.patterns().collect::<Vec<_>>())
            .field("noise_floor", &self.noise_floor())
            .field("queued", &self.queued())
            .finish()
    }
}

impl fmt::Debug for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter").field("name", &self.name).finish()
    }
}
