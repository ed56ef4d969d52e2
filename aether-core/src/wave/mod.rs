//! Waves: the messages of the aether.
//!
//! A [`Wave`] carries a payload on a [`Channel`] with an [`Amplitude`]
//! (importance), a [`Phase`] (state), a time decay and a hop count. Build one
//! with [`Wave::new`] or [`Wave::builder`]:
//!
//! ```
//! use aether_core::{Channel, Phase, Wave};
//!
//! let wave = Wave::builder(Channel::new("orders.cancelled"))
//!     .amplitude(0.7)
//!     .phase(Phase::RETRACT)
//!     .correlation_key("order-42")
//!     .json(&serde_json::json!({"order_id": 42}))
//!     .build()?;
//! assert_eq!(wave.amplitude().value(), 0.7);
//! assert_eq!(wave.payload()["order_id"], 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod amplitude;
pub(crate) mod clock;
mod id;
mod payload;
mod trace;
pub(crate) mod wire;

use std::{fmt, sync::Arc, time::Duration};

use smol_str::SmolStr;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

pub use amplitude::{Amplitude, AmplitudeError, Phase, PhaseError};
pub use id::WaveId;
pub use payload::IntoPayload;
pub(crate) use payload::json_pooled;
pub use trace::{TRACE_FLAG_SAMPLED, TraceContext, TraceContextError};

pub(crate) use clock::unix_nanos;
pub(crate) use id::{process_nonce, unique_odd_id};

use crate::{
    Channel,
    attenuation::{DEFAULT_ATTENUATION_FACTOR, effective_amplitude},
    channel::ChannelError,
    reflection::{Reflection, ReflectionReason},
};

/// [`Wave::flags`] bit: the wave bends to a parent channel when nobody
/// resonates on its own.
pub(crate) const DIFFRACTS: u8 = 1 << 0;
/// [`Wave::flags`] bit: the wave comes back to its source if it cannot be
/// delivered.
pub(crate) const REFLECTS: u8 = 1 << 1;
/// [`Wave::flags`] bit: the payload is sealed (nonce and ciphertext),
/// as it travels on a channel with an encryption rule.
pub(crate) const SEALED: u8 = 1 << 2;

/// One message on the aether.
///
/// Cloning is cheap: short names are stored inline, the payload and the
/// rarely used fields (correlation key, reply channel, time decay) are
/// reference counted. The struct is kept small because every wave is moved
/// into a receive queue and out again on another thread.
#[derive(Clone)]
pub struct Wave {
    payload: Bytes,
    channel: Channel,
    source: Option<SmolStr>,
    id: WaveId,
    /// The amplitude as last measured (at emit, arrival, decay or hop).
    amplitude: Amplitude,
    /// `a0`: the amplitude it was emitted or re-amplified with.
    source_amplitude: Amplitude,
    phase: Phase,
    emitted_at_ns: u64,
    /// Instance id of the emitting vibrator (for skipping one's own waves).
    origin: u64,
    /// Wider than the largest `max_propagation` (255), so that a count that
    /// stops at its maximum is still past any limit.
    hops: u16,
    /// [`DIFFRACTS`] and [`REFLECTS`]: what the emitting aether does when the
    /// wave cannot be delivered (one byte, in what would be padding).
    flags: u8,
    extras: Option<Arc<Extras>>,
}

/// The fields most waves leave at their defaults.
#[derive(Clone, Debug, Default)]
struct Extras {
    decay_per_s: f64,
    /// When the decay clock last restarted (re-amplification); 0 = at emission.
    amplified_at_ns: u64,
    correlation_key: Option<SmolStr>,
    reply_to: Option<Channel>,
    /// Set on a reflected wave: why it came back, and from which channel.
    reflection: Option<Box<Reflection>>,
    /// The trace of the span that emitted it.
    trace: Option<TraceContext>,
}

impl Wave {
    /// A full-strength wave, in phase 0, with no time decay.
    ///
    /// The channel is checked when the wave is emitted.
    pub fn new(channel: impl Into<Channel>, payload: impl IntoPayload) -> Self {
        Self {
            payload: payload.into_payload(),
            channel: channel.into(),
            source: None,
            id: WaveId::NIL,
            amplitude: Amplitude::MAX,
            source_amplitude: Amplitude::MAX,
            phase: Phase::ASSERT,
            emitted_at_ns: 0,
            origin: 0,
            hops: 0,
            flags: 0,
            extras: None,
        }
    }

    /// A builder for a wave on `channel`.
    pub fn builder(channel: impl Into<Channel>) -> WaveBuilder {
        WaveBuilder {
            wave: Wave::new(channel, Bytes::new()),
            error: None,
        }
    }

    fn extras_mut(&mut self) -> &mut Extras {
        Arc::make_mut(self.extras.get_or_insert_with(Default::default))
    }

    /// Unique, time-ordered id, given when the wave is emitted ([`WaveId::NIL`]
    /// before). Each emission of a fresh wave is a new wave with a new id; a
    /// wave that hops keeps its id.
    pub fn id(&self) -> WaveId {
        self.id
    }

    /// The channel (frequency) the wave travels on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The amplitude as last measured: at emit, on arrival (after attenuation),
    /// or by [`Wave::apply_time_decay`] / [`Wave::propagate`].
    pub fn amplitude(&self) -> Amplitude {
        self.amplitude
    }

    /// The amplitude the wave was emitted (or re-amplified) with.
    pub fn source_amplitude(&self) -> Amplitude {
        self.source_amplitude
    }

    /// The phase (state).
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Time decay per second (0 = none).
    pub fn decay_per_s(&self) -> f64 {
        self.extras.as_ref().map_or(0.0, |e| e.decay_per_s)
    }

    /// How many hops (relays, replays, re-emissions) the wave has made.
    pub fn propagation_count(&self) -> u32 {
        u32::from(self.hops)
    }

    /// Name of the vibrator that emitted it, once emitted.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Key for interference (defaults to the channel).
    pub fn correlation_key(&self) -> &str {
        self.extras
            .as_ref()
            .and_then(|e| e.correlation_key.as_deref())
            .unwrap_or_else(|| self.channel.as_str())
    }

    /// Where a reply should go, for a request.
    pub fn reply_to(&self) -> Option<&Channel> {
        self.extras.as_ref().and_then(|e| e.reply_to.as_ref())
    }

    /// Whether it bends to the nearest parent channel that has a resonator
    /// when nobody resonates on its own ([`WaveBuilder::diffracting`]).
    pub fn is_diffracting(&self) -> bool {
        self.flags & DIFFRACTS != 0
    }

    /// Whether it comes back to its source if it cannot be delivered
    /// ([`WaveBuilder::reflect_on_failure`]).
    pub fn reflects_on_failure(&self) -> bool {
        self.flags & REFLECTS != 0
    }

    /// Whether this is a reflection: a wave that came back to its source
    /// ([`crate::reflection`]).
    pub fn is_reflected(&self) -> bool {
        self.reflection().is_some()
    }

    /// Why it came back to its source, for a reflected wave.
    pub fn reflection(&self) -> Option<&ReflectionReason> {
        self.reflection_info().map(|r| &r.reason)
    }

    /// The trace context it carries: the trace, and the span that emitted
    /// it ([`WaveBuilder::trace_context`], [`Wave::set_trace_context`]).
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.extras.as_ref().and_then(|e| e.trace)
    }

    /// Sets (or clears) the trace context it carries: an emitter's tracing
    /// layer calls it just before the wave leaves.
    pub fn set_trace_context(&mut self, context: Option<TraceContext>) {
        if context.is_some() || self.trace_context().is_some() {
            self.extras_mut().trace = context;
        }
    }

    fn reflection_info(&self) -> Option<&Reflection> {
        self.extras.as_ref().and_then(|e| e.reflection.as_deref())
    }

    /// When it was emitted (Unix time), once emitted.
    pub fn emitted_at(&self) -> Option<std::time::SystemTime> {
        (self.emitted_at_ns != 0)
            .then(|| std::time::UNIX_EPOCH + Duration::from_nanos(self.emitted_at_ns))
    }

    /// The payload bytes, untouched.
    pub fn payload_bytes(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the payload bytes out of the wave.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The payload read as JSON, parsed anew at each call (keep the value
    /// if you read several fields), for the seed documents' style
    /// `wave.payload()["email"]`. A payload that is not JSON (UTF-8 JSON
    /// text) gives `Value::Null`, silently: use [`Wave::json`] to get the
    /// error, or to read it into a type.
    pub fn payload(&self) -> serde_json::Value {
        self.json().unwrap_or(serde_json::Value::Null)
    }

    /// The payload deserialized from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// The effective amplitude at Unix time `now_ns` with a per-hop
    /// `attenuation_factor`, by the attenuation rule.
    pub fn effective_amplitude(&self, now_ns: u64, attenuation_factor: f64) -> f64 {
        let clock_start = self.stamped_at_ns();
        let age = if clock_start == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(now_ns.saturating_sub(clock_start))
        };
        effective_amplitude(
            self.source_amplitude.value(),
            self.decay_per_s(),
            age,
            attenuation_factor,
            self.propagation_count(),
        )
    }

    /// Measures the amplitude again now, after time decay, with the default
    /// per-hop factor (an aether measures again with its own when the wave is
    /// emitted or arrives).
    pub fn apply_time_decay(&mut self) {
        self.measure(unix_nanos(), DEFAULT_ATTENUATION_FACTOR);
    }

    /// Makes one hop: the propagation count goes up and the amplitude is
    /// attenuated once more (×0.95 with the default factor).
    pub fn propagate(&mut self) {
        self.hops = self.hops.saturating_add(1);
        self.apply_time_decay();
    }

    /// Re-amplifies the wave for a deliberate resend (retry, replay): its
    /// amplitude is raised to `amplitude` (at most 1.0), its decay clock
    /// restarts, and it makes one hop.
    pub fn reamplify(&mut self, amplitude: f64) -> Result<(), AmplitudeError> {
        self.source_amplitude = Amplitude::new(amplitude)?;
        self.extras_mut().amplified_at_ns = unix_nanos();
        self.propagate();
        Ok(())
    }

    /// Sets the measured amplitude by the rule, at `now_ns` with `factor`.
    pub(crate) fn measure(&mut self, now_ns: u64, factor: f64) {
        self.amplitude = Amplitude::from_rule(self.effective_amplitude(now_ns, factor));
    }

    /// Stamps a fresh wave at emission: id, source, origin and clock. A wave
    /// that has already hopped keeps them.
    #[inline]
    pub(crate) fn stamp_emission(&mut self, source: &SmolStr, origin: u64, now_ns: u64) {
        if self.hops == 0 {
            self.id = WaveId::at_nanos(now_ns);
            self.source = Some(source.clone());
            self.origin = origin;
            self.emitted_at_ns = now_ns;
        }
    }

    /// When its clock last started (Unix ns, 0 if never): its
    /// re-amplification if it was re-amplified (a deliberate resend),
    /// else its emission.
    pub(crate) fn stamped_at_ns(&self) -> u64 {
        self.extras
            .as_ref()
            .map(|e| e.amplified_at_ns)
            .filter(|t| *t != 0)
            .unwrap_or(self.emitted_at_ns)
    }

    /// The instance id of the vibrator that first emitted it (its
    /// reflections and relays keep it), 0 for a wave from a client that
    /// names none. Instance reports list each vibrator's id
    /// ([`crate::report::VibratorReport::origin`]).
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Gives the wave the id `id` (a foreign wave without one, on a durable
    /// channel).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn set_id(&mut self, id: WaveId) {
        self.id = id;
    }

    /// Puts the wave on `channel` (a hopping wave gets its base channel back
    /// on arrival).
    pub(crate) fn set_channel(&mut self, channel: Channel) {
        self.channel = channel;
    }

    pub(crate) fn set_reply_to(&mut self, reply_to: Channel) {
        self.extras_mut().reply_to = Some(reply_to);
    }

    /// Whether the emitting aether follows its fate: it diffracts or
    /// reflects (one byte read on the emit path).
    #[inline]
    pub(crate) fn is_tracked(&self) -> bool {
        self.flags != 0
    }

    /// Neither diffracts nor reflects (a request fails with `NoResponders`
    /// instead).
    pub(crate) fn clear_tracking(&mut self) {
        self.flags = 0;
    }

    /// The correlation key as set, without the default.
    pub(crate) fn explicit_correlation_key(&self) -> Option<&str> {
        self.extras
            .as_ref()
            .and_then(|e| e.correlation_key.as_deref())
    }

    /// Bends to `parent` (diffraction): one more hop, and its source
    /// amplitude `a0` weakened by `factor`, so that every later measure
    /// keeps the loss. The aether then measures it again.
    pub(crate) fn diffract(&mut self, parent: Channel, factor: f64) {
        self.channel = parent;
        self.hops = self.hops.saturating_add(1);
        self.source_amplitude = Amplitude::from_rule(self.source_amplitude.value() * factor);
    }

    /// What a wave that failed for `reason` (dropped, unheard, refused)
    /// sends back, as emitted on `channel`: its reflection, if it reflects on
    /// failure and names the vibrator it came from (an origin); `None` for
    /// every other wave. The one rule of reflect-on-failure, on every medium
    /// and path.
    pub(crate) fn failed(self, reason: ReflectionReason, channel: Channel) -> Option<Wave> {
        (self.reflects_on_failure() && self.origin() != 0)
            .then(|| self.into_reflection(reason, channel))
    }

    /// This wave reflected for `reason`, as emitted on `channel` (before any
    /// diffraction): same id, source, origin, emission time, payload and
    /// correlation key (made explicit, so it travels), phase shifted by π, at
    /// full strength, without hops, time decay, reply channel or the flags
    /// that would make it bend or reflect again.
    pub(crate) fn into_reflection(mut self, reason: ReflectionReason, channel: Channel) -> Wave {
        let key = match self.explicit_correlation_key() {
            Some(key) => SmolStr::new(key),
            None => SmolStr::new(channel.as_str()),
        };
        self.phase = self.phase.inverted();
        self.amplitude = Amplitude::MAX;
        self.source_amplitude = Amplitude::MAX;
        self.hops = 0;
        self.flags = 0;
        self.channel = channel.clone();
        self.extras = Some(Arc::new(Extras {
            correlation_key: Some(key),
            reflection: Some(Box::new(Reflection { reason, channel })),
            ..Default::default()
        }));
        self
    }

    /// For a reflection, the channel the reflected wave was emitted on.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn reflected_channel(&self) -> Option<&Channel> {
        self.reflection_info().map(|r| &r.channel)
    }

    /// Whether it came the way it may ([`crate::reflection::arrived_rightly`]).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn arrived_rightly(&self) -> bool {
        crate::reflection::arrived_rightly(
            self.channel(),
            self.reflected_channel(),
            self.source(),
            self.origin(),
        )
    }

    /// A reflection that travelled on its source's reflection channel gets
    /// the channel it was emitted on back.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn restore_reflected_channel(&mut self) {
        if let Some(channel) = self.reflection_info().map(|r| r.channel.clone()) {
            self.channel = channel;
        }
    }
}

impl Wave {
    /// Whether its payload is sealed: on its way over the network, or kept
    /// at rest ([`crate::Operator::sealed_at_rest`]); its payload is then a
    /// nonce, the sealed bytes and their tag.
    pub fn is_sealed(&self) -> bool {
        self.flags & SEALED != 0
    }

    /// A copy carrying `sealed` (this wave's payload, sealed) in its place.
    pub(crate) fn sealed_with(&self, sealed: Bytes) -> Wave {
        let mut wave = self.clone();
        wave.payload = sealed;
        wave.flags |= SEALED;
        wave
    }

    /// Puts the opened payload back in place of the sealed one.
    pub(crate) fn unseal(&mut self, payload: Bytes) {
        self.payload = payload;
        self.flags &= !SEALED;
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
}

impl fmt::Debug for Wave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Wave");
        s.field("id", &self.id)
            .field("channel", &self.channel.as_str())
            .field("amplitude", &self.amplitude)
            .field("phase", &self.phase)
            .field("hops", &self.hops);
        if let Some(source) = &self.source {
            s.field("source", source);
        }
        if let Some(extras) = &self.extras {
            if let Some(key) = &extras.correlation_key {
                s.field("correlation_key", key);
            }
            if let Some(reply_to) = &extras.reply_to {
                s.field("reply_to", &reply_to.as_str());
            }
            if let Some(reflection) = &extras.reflection {
                s.field("reflection", &reflection.reason);
            }
            if let Some(trace) = &extras.trace {
                s.field("trace", trace);
            }
        }
        if self.is_diffracting() {
            s.field("diffracting", &true);
        }
        if self.reflects_on_failure() {
            s.field("reflect_on_failure", &true);
        }
        match std::str::from_utf8(&self.payload) {
            Ok(text) if text.len() <= 256 => s.field("payload", &text),
            _ => s.field("payload_len", &self.payload.len()),
        };
        s.finish()
    }
}

/// Builds a [`Wave`]; [`WaveBuilder::build`] refuses bad values with a typed
/// error instead of clamping them.
#[derive(Debug)]
pub struct WaveBuilder {
    wave: Wave,
    error: Option<WaveError>,
}

impl WaveBuilder {
    fn fail(mut self, error: WaveError) -> Self {
        self.error.get_or_insert(error);
        self
    }

    /// Importance in `[0, 1]` (default 1.0).
    pub fn amplitude(mut self, amplitude: f64) -> Self {
        match Amplitude::new(amplitude) {
            Ok(a) => {
                self.wave.amplitude = a;
                self.wave.source_amplitude = a;
                self
            }
            Err(e) => self.fail(WaveError::Amplitude(e)),
        }
    }

    /// State, as a [`Phase`] or an angle in radians (default 0).
    pub fn phase(mut self, phase: impl IntoPhase) -> Self {
        match phase.into_phase() {
            Ok(p) => {
                self.wave.phase = p;
                self
            }
            Err(e) => self.fail(WaveError::Phase(e)),
        }
    }

    /// Time decay per second, finite and `>= 0` (default 0: no decay).
    pub fn decay_per_s(mut self, decay_per_s: f64) -> Self {
        if decay_per_s.is_finite() && decay_per_s >= 0.0 {
            self.wave.extras_mut().decay_per_s = decay_per_s;
            self
        } else {
            self.fail(WaveError::Decay { value: decay_per_s })
        }
    }

    /// The decay that makes the wave die after `ttl` under `min_amplitude`
    /// (use the aether's). Call after [`WaveBuilder::amplitude`].
    pub fn time_to_live(self, ttl: Duration, min_amplitude: f64) -> Self {
        let a0 = self.wave.source_amplitude.value();
        self.decay_per_s(crate::attenuation::decay_for_ttl(a0, min_amplitude, ttl))
    }

    /// Key for interference (default: the channel): 1 to 256 bytes.
    pub fn correlation_key(mut self, key: impl AsRef<str>) -> Self {
        let key = key.as_ref();
        if key.is_empty() || key.len() > MAX_CORRELATION_KEY_BYTES {
            return self.fail(WaveError::CorrelationKey { len: key.len() });
        }
        self.wave.extras_mut().correlation_key = Some(SmolStr::new(key));
        self
    }

    /// Where replies should go.
    pub fn reply_to(mut self, channel: impl Into<Channel>) -> Self {
        self.wave.extras_mut().reply_to = Some(channel.into());
        self
    }

    /// The trace it belongs to (default none): the span that emits it, so
    /// that the receiver's span joins the same trace.
    pub fn trace_context(mut self, context: TraceContext) -> Self {
        self.wave.extras_mut().trace = Some(context);
        self
    }

    /// Diffraction (default off): when nobody resonates on its channel, the
    /// wave bends to the nearest parent channel that has a resonator
    /// (`orders.eu.created` → `orders.eu` → `orders`). Each bend is one
    /// more hop (so `max_propagation` still holds) and weakens it by the
    /// aether's `physics.diffraction_factor` (default 0.5); a wave that
    /// dies on the way is dropped as expired.
    ///
    /// Over NATS the emitting aether learns that nobody listens from the
    /// server's "no responders" status: such a wave is published with a
    /// reply subject and tracked for a moment, which costs a little more
    /// than an ordinary emit (README, "Physics"). Requests ignore it (they
    /// fail with `NoResponders`).
    pub fn diffracting(mut self, diffracting: bool) -> Self {
        self.wave.set_flag(DIFFRACTS, diffracting);
        self
    }

    /// Reflection (default off): if the wave cannot be delivered (nobody
    /// resonates on its channel, it died, it went past the hop limit) or a
    /// receiver refuses it ([`Vibrator::reflect`](crate::Vibrator::reflect)),
    /// it comes back to the vibrator that emitted it, phase shifted by π,
    /// with the reason ([`crate::reflection`]). Over NATS it is tracked like
    /// a diffracting wave. Requests ignore it.
    pub fn reflect_on_failure(mut self, reflect: bool) -> Self {
        self.wave.set_flag(REFLECTS, reflect);
        self
    }

    /// The payload bytes.
    pub fn payload(mut self, payload: impl IntoPayload) -> Self {
        self.wave.payload = payload.into_payload();
        self
    }

    /// The payload, serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match payload::json_pooled(value) {
            Ok(bytes) => {
                self.wave.payload = bytes;
                self
            }
            Err(e) => self.fail(WaveError::Json(Arc::new(e))),
        }
    }

    /// The wave, or the first bad value given.
    pub fn build(self) -> Result<Wave, WaveError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        // A wave is emitted on one channel: a pattern is refused here, as
        // a malformed name is, rather than at emit.
        self.wave
            .channel
            .validate_concrete()
            .map_err(WaveError::Channel)?;
        if let Some(reply_to) = self.wave.reply_to() {
            reply_to.validate_concrete().map_err(WaveError::Channel)?;
        }
        Ok(self.wave)
    }
}

/// Something that converts into a [`Phase`]: a `Phase` or radians.
pub trait IntoPhase {
    /// The phase.
    fn into_phase(self) -> Result<Phase, PhaseError>;
}

impl IntoPhase for Phase {
    fn into_phase(self) -> Result<Phase, PhaseError> {
        Ok(self)
    }
}

impl IntoPhase for f64 {
    fn into_phase(self) -> Result<Phase, PhaseError> {
        Phase::new(self)
    }
}

/// A wave could not be built.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaveError {
    /// The channel (or reply channel) is invalid.
    #[error(transparent)]
    Channel(ChannelError),
    /// The amplitude is out of range.
    #[error(transparent)]
    Amplitude(AmplitudeError),
    /// The phase is not finite.
    #[error(transparent)]
    Phase(PhaseError),
    /// The decay is negative or not finite.
    #[error("decay_per_s {value} is invalid: it must be a finite number >= 0")]
    Decay {
        /// The refused value.
        value: f64,
    },
    /// The payload could not be serialized as JSON.
    #[error("payload could not be serialized as JSON: {0}")]
    Json(Arc<serde_json::Error>),
    /// The correlation key is empty or too long.
    #[error("correlation key of {len} bytes is invalid: it must be 1 to 256 bytes")]
    CorrelationKey {
        /// Its length in bytes.
        len: usize,
    },
}

/// Longest correlation key, in bytes (what the wire envelope carries).
pub const MAX_CORRELATION_KEY_BYTES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_refuses_bad_values() {
        assert!(matches!(
            Wave::builder("a").amplitude(1.1).build(),
            Err(WaveError::Amplitude(_))
        ));
        assert!(matches!(
            Wave::builder("a").amplitude(f64::NAN).build(),
            Err(WaveError::Amplitude(_))
        ));
        assert!(matches!(
            Wave::builder("a").decay_per_s(-1.0).build(),
            Err(WaveError::Decay { .. })
        ));
        assert!(matches!(
            Wave::builder("a").phase(f64::NAN).build(),
            Err(WaveError::Phase(_))
        ));
        assert!(matches!(
            Wave::builder("a").correlation_key("").build(),
            Err(WaveError::CorrelationKey { len: 0 })
        ));
        assert!(matches!(
            Wave::builder("a").correlation_key("k".repeat(257)).build(),
            Err(WaveError::CorrelationKey { len: 257 })
        ));
        assert!(
            Wave::builder("a")
                .correlation_key("k".repeat(256))
                .build()
                .is_ok()
        );
        assert!(matches!(
            Wave::builder("a..b").build(),
            Err(WaveError::Channel(_))
        ));
    }

    #[test]
    fn propagate_attenuates_by_default_factor() {
        let mut wave = Wave::new("a", ());
        wave.propagate();
        assert_eq!(wave.propagation_count(), 1);
        assert!((wave.amplitude().value() - 0.95).abs() < 1e-12);
        wave.propagate();
        assert!((wave.amplitude().value() - 0.9025).abs() < 1e-12);
        assert_eq!(wave.source_amplitude().value(), 1.0);
    }

    #[test]
    fn time_decay_lowers_amplitude() {
        let mut wave = Wave::builder("a").decay_per_s(1.0).build().unwrap();
        let source = SmolStr::new("s");
        wave.stamp_emission(&source, 1, unix_nanos() - 1_000_000_000);
        wave.apply_time_decay();
        let a = wave.amplitude().value();
        assert!(a < 0.37 && a > 0.36, "{a}");
    }

    #[test]
    fn a_wave_stays_small() {
        // Every wave is moved into a queue and out again: the flags of
        // diffraction and reflection live in what was padding.
        assert!(
            std::mem::size_of::<Wave>() <= 160,
            "{}",
            std::mem::size_of::<Wave>()
        );
    }

    #[test]
    fn reamplify_raises_and_hops() {
        let mut wave = Wave::builder("a").amplitude(0.2).build().unwrap();
        wave.reamplify(1.0).unwrap();
        assert_eq!(wave.propagation_count(), 1);
        assert!((wave.amplitude().value() - 0.95).abs() < 1e-9);
        assert!(wave.reamplify(1.5).is_err());
    }
}
