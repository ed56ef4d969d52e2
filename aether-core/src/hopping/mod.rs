//! Time-synchronized frequency hopping: a base channel travels on a wire
//! channel that changes with every time slot.
//!
//! A sender calls [`Vibrator::emit_time_hopping_wave`]; a receiver calls
//! [`Vibrator::resonate_hopping`] and receives the waves with their **base**
//! channel, as if nothing hopped. On the medium (and on NATS, on the wire)
//! the wave travels on an opaque channel `_hop.<32 hex digits>`:
//!
//! - time is cut in slots `s = floor(unix_ms / hop_interval_ms)`;
//! - the hop of slot `s` is `HMAC-SHA256(secret, base || s) mod hop_count`;
//! - the wire channel of hop `h` is `_hop.` and 16 bytes of
//!   `HMAC-SHA256(secret, "chan" || base || h)` in hex
//!   ([`HopKey`] says the bytes exactly).
//!
//! Without the secret, an observer cannot tell which base a wire channel
//! belongs to, nor predict the next one. A receiver accepts a wave stamped in
//! the slots `s - 1`, `s` and `s + 1` of its own clock (so clocks may differ
//! by one slot) and only on the hop of its stamp's slot; anything else is a
//! replay, refused and counted as [`DropReason::Replay`].
//!
//! Both sides read the secret and the slot length from
//! [`HoppingConfig`] (`[aether.hopping]`); a vibrator may use its own
//! secret ([`Vibrator::set_hopping_secret`]). Without a secret, hopping still
//! spreads a channel's waves over `hop_count` wire channels, but conceals
//! nothing: anyone who knows a base can compute its wire channels.
//!
//! What hopping does not hide: the payload, the source name and the other
//! envelope fields (use TLS to the servers against eavesdroppers), the volume
//! and timing of the traffic, and, to the NATS servers, which connections
//! subscribe to which wire channels. The emission stamp is not
//! authenticated: the replay check stops waves re-sent as they were, not a
//! forger who rewrites the stamp.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aether_core::{Aether, AetherConfig, Secret, Vibrator, config::HoppingConfig};
//! use serde_json::json;
//!
//! let aether = Aether::new(AetherConfig {
//!     hopping: HoppingConfig {
//!         secret: Some(Secret::new("sixteen byte key")),
//!         ..Default::default()
//!     },
//!     ..Default::default()
//! })?;
//! let mut receiver = Vibrator::create("receiver", &aether).await?;
//! receiver.resonate_hopping("orders", 4).await?;
//!
//! let sender = Vibrator::create("sender", &aether).await?;
//! let interval = aether.config().hopping.hop_interval_ms;
//! sender.emit_time_hopping_wave("orders", 4, interval, json!({"msg": "hop"})).await?;
//!
//! let wave = receiver.receive().await.unwrap();
//! assert_eq!(wave.channel(), "orders"); // the base, never the wire channel
//! assert_eq!(wave.payload()["msg"], "hop");
//! # Ok(()) }
//! ```
//!
//! [`HoppingConfig`]: crate::config::HoppingConfig
//! [`DropReason::Replay`]: crate::DropReason::Replay

pub(crate) mod gate;
mod receiver;
pub(crate) mod resonances;
mod sequence;

use std::sync::{Arc, OnceLock};

use serde::Serialize;

pub(crate) use self::gate::HopGate;
pub use self::sequence::{
    HOP_TOKEN, HopKey, HopSequence, HopSettingsError, Refusal, TOKEN_BYTES, is_hop_channel, slot,
};
use self::{receiver::Window, resonances::Resonance};
use crate::{
    Channel, EmitError, EmitErrorKind, ResonateError, ResonateErrorKind, Secret, Vibrator,
    VibratorError, VibratorErrorKind, Wave, WaveId, config::HoppingConfig, wave::unix_nanos,
};

impl Vibrator {
    /// Emits a full-strength wave carrying `payload` as JSON on the wire
    /// channel of `base` for the current time slot, one of `hop_count`.
    ///
    /// `hop_interval_ms` must be the aether's `hopping.hop_interval_ms`,
    /// which receivers follow: the interval is agreed in configuration, not
    /// carried by the wave, so a sender cannot pick one nobody listens to.
    /// The key is the vibrator's hopping secret, or the aether's
    /// `hopping.secret`.
    ///
    /// Fails with `InvalidChannel` if `base` is not a concrete channel or
    /// starts with `_hop`, if `hop_count` is 0, or if the interval is not the
    /// configured one; with `Payload` if the payload cannot be serialized;
    /// with `Closed` if the aether is closed. See
    /// [`Vibrator::emit_hopping`] for a wave built with its own amplitude or
    /// phase.
    pub async fn emit_time_hopping_wave(
        &self,
        base: impl Into<Channel>,
        hop_count: u32,
        hop_interval_ms: u64,
        payload: impl Serialize,
    ) -> Result<WaveId, EmitError> {
        let configured = self.aether().config().hopping.hop_interval_ms;
        if hop_interval_ms != configured {
            return Err(EmitError::new(
                EmitErrorKind::InvalidChannel,
                format!(
                    "hop_interval_ms {hop_interval_ms} is not this aether's \
                     hopping.hop_interval_ms ({configured}), which receivers follow; \
                     emit with {configured} or configure the same interval everywhere"
                ),
            ));
        }
        let bytes = serde_json::to_vec(&payload)
            .map_err(|e| EmitError::with_source(EmitErrorKind::Payload, e))?;
        self.emit_hopping(Wave::new(base, bytes), hop_count).await
    }

    /// Emits `wave` by hopping: its channel is the base, and it travels on
    /// that base's wire channel for the current slot, one of `hop_count`,
    /// with the aether's `hopping.hop_interval_ms`. Everything else about
    /// the wave (amplitude, phase, decay, correlation key) is kept, and
    /// travels in the envelope as usual: a correlation key, unlike the
    /// channel, is not hidden.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use aether_core::{Aether, DropReason, Vibrator, Wave};
    ///
    /// let aether = Aether::default();
    /// let mut receiver = Vibrator::builder("receiver").noise_floor(0.3).create(&aether).await?;
    /// receiver.resonate_hopping("orders", 4).await?;
    /// let sender = Vibrator::create("sender", &aether).await?;
    /// sender.emit_hopping(Wave::builder("orders").amplitude(0.1).build()?, 4).await?;
    /// assert!(receiver.try_receive().is_none()); // under its noise floor
    /// assert_eq!(receiver.stats().dropped(DropReason::BelowNoiseFloor), 1);
    /// # Ok(()) }
    /// ```
    pub async fn emit_hopping(&self, mut wave: Wave, hop_count: u32) -> Result<WaveId, EmitError> {
        let interval = self.aether().config().hopping.hop_interval_ms;
        let sequence =
            HopSequence::new(self.hop_key(), wave.channel().clone(), hop_count, interval)
                .map_err(|e| EmitError::with_source(EmitErrorKind::InvalidChannel, e))?;
        // The ACL judges the base channel: the wire channel is the bus's own.
        self.aether().may_emit(Some(self.name()), sequence.base())?;
        // One clock reading both stamps the wave and picks its slot, so the
        // receiver finds the wire channel of the stamp's slot. A wave that
        // has hopped already keeps its stamp, and so the slot of its stamp.
        let now_ns = unix_nanos();
        let stamp_ns = match wave.emitted_at() {
            Some(t) if wave.propagation_count() > 0 => t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(now_ns, |d| u64::try_from(d.as_nanos()).unwrap_or(now_ns)),
            _ => now_ns,
        };
        wave.set_channel(sequence.channel_at(stamp_ns / 1_000_000));
        self.emit_at(wave, now_ns).await
    }

    /// Resonates on the hopping waves of `base` with `hop_count` hops, slots
    /// of the aether's `hopping.hop_interval_ms` and the vibrator's hopping
    /// key: they are delivered with `base` as their channel. A wave stamped
    /// more than one slot away from this vibrator's clock, or on a wire
    /// channel that is not its slot's hop, is refused and counted as
    /// [`DropReason::Replay`](crate::DropReason::Replay).
    ///
    /// A task (on the current Tokio runtime) moves the subscriptions with
    /// time, until [`Vibrator::stop_hopping`] or the vibrator is dropped.
    /// Resonating again on the same base replaces the earlier resonance.
    ///
    /// Fails with `InvalidChannel` if `base` is not a concrete channel or
    /// starts with `_hop`, or if `hop_count` is 0; with `Closed` if the
    /// aether is closed.
    pub async fn resonate_hopping(
        &mut self,
        base: impl Into<Channel>,
        hop_count: u32,
    ) -> Result<(), ResonateError> {
        let interval = self.aether().config().hopping.hop_interval_ms;
        let sequence = HopSequence::new(self.hop_key(), base.into(), hop_count, interval)
            .map_err(|e| ResonateError::with_source(ResonateErrorKind::InvalidChannel, e))?;
        self.stop_hopping(sequence.base()).await;
        self.aether().may_resonate(self.name(), sequence.base())?;
        let gate = Arc::new(HopGate::new(
            sequence,
            self.inbox().clone(),
            self.aether().security().clone(),
        ));
        let mut window = Window::new(self.aether().clone(), gate.clone());
        window.follow(unix_nanos() / 1_000_000).await?;
        let task = tokio::spawn(window.run()).abort_handle();
        self.hopping_mut().resonances.push(Resonance { gate, task });
        Ok(())
    }

    /// Stops resonating on the hopping waves of `base`. Waves already queued
    /// stay. Returns whether it was hopping on it.
    pub async fn stop_hopping(&mut self, base: impl Into<Channel>) -> bool {
        let base = base.into();
        let mut stopped = false;
        self.hopping_mut().resonances.retain(|resonance| {
            let stop = *resonance.gate.base() == base;
            if stop {
                resonance.stop();
                stopped = true;
            }
            !stop
        });
        stopped
    }

    /// The base channels it resonates on by hopping.
    pub fn hopping_bases(&self) -> impl Iterator<Item = &Channel> + '_ {
        self.hopping().resonances.iter().map(|r| r.gate.base())
    }

    /// Hops with `secret` instead of the aether's `hopping.secret`: emits from
    /// now on and hopping resonances started from now on use it. For
    /// vibrators of one aether that must not hear each other's hopping waves
    /// (on the embedded medium, where they share one configuration). At least
    /// 16 bytes, or `InvalidSetting`.
    pub fn set_hopping_secret(&mut self, secret: Secret) -> Result<(), VibratorError> {
        let check = HoppingConfig {
            secret: Some(secret),
            ..Default::default()
        };
        check
            .validate()
            .map_err(|e| VibratorError::with_source(VibratorErrorKind::InvalidSetting, e))?;
        self.hopping_mut().key = OnceLock::from(HopKey::new(check.secret.as_ref()));
        Ok(())
    }

    /// Whether its hopping conceals anything: it has a secret of its own or
    /// the aether's.
    pub fn hopping_conceals(&self) -> bool {
        self.hop_key().conceals()
    }

    /// Its hopping key: its own secret's, or the aether's.
    fn hop_key(&self) -> HopKey {
        self.hopping()
            .key
            .get_or_init(|| HopKey::new(self.aether().config().hopping.secret.as_ref()))
            .clone()
    }
}
