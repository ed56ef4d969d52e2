//! `Parts`: every field of a wave as plain values, for tests (through the
//! same `Raw::build` as decoding).

#[allow(clippy::wildcard_imports)]
use super::*;

/// Every field of a wave but its channel, as plain values: for tests, which
/// build waves with any id, origin or clock and compare waves field by field.
///
/// Not part of the supported API.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq)]
pub struct Parts {
    /// The wave id as a number.
    pub id: u128,
    /// Unix ns of emission, 0 if not emitted.
    pub emitted_at_ns: u64,
    /// Emitter instance id, 0 if unknown.
    pub origin: u64,
    /// Amplitude as last measured.
    pub amplitude: f64,
    /// Amplitude at emission (`a0`).
    pub source_amplitude: f64,
    /// Phase in radians.
    pub phase: f64,
    /// Hop count.
    pub hops: u16,
    /// Source name.
    pub source: Option<String>,
    /// Time decay per second.
    pub decay_per_s: f64,
    /// Unix ns the decay clock restarted, 0 = at emission.
    pub amplified_at_ns: u64,
    /// Correlation key as set (not defaulted to the channel).
    pub correlation_key: Option<String>,
    /// Reply channel.
    pub reply_to: Option<String>,
    /// Diffracts ([`FLAG_DIFFRACT`]).
    pub diffracting: bool,
    /// Reflects on failure ([`FLAG_REFLECT`]).
    pub reflect_on_failure: bool,
    /// For a reflection: why, and the channel it was emitted on.
    pub reflection: Option<(ReflectionReason, String)>,
    /// The trace context.
    pub trace: Option<TraceContext>,
    /// Payload bytes.
    pub payload: Bytes,
}

impl Default for Parts {
    /// The fields of `Wave::new(channel, ())`.
    fn default() -> Self {
        Self {
            id: 0,
            emitted_at_ns: 0,
            origin: 0,
            amplitude: 1.0,
            source_amplitude: 1.0,
            phase: 0.0,
            hops: 0,
            source: None,
            decay_per_s: 0.0,
            amplified_at_ns: 0,
            correlation_key: None,
            reply_to: None,
            diffracting: false,
            reflect_on_failure: false,
            reflection: None,
            trace: None,
            payload: Bytes::new(),
        }
    }
}

impl Parts {
    /// The fields of `wave`.
    pub fn of(wave: &Wave) -> Self {
        let extras = wave.extras.as_deref();
        Self {
            id: wave.id.as_u128(),
            emitted_at_ns: wave.emitted_at_ns,
            origin: wave.origin,
            amplitude: wave.amplitude.value(),
            source_amplitude: wave.source_amplitude.value(),
            phase: wave.phase.radians(),
            hops: wave.hops,
            source: wave.source.as_ref().map(ToString::to_string),
            decay_per_s: extras.map_or(0.0, |e| e.decay_per_s),
            amplified_at_ns: extras.map_or(0, |e| e.amplified_at_ns),
            correlation_key: extras
                .and_then(|e| e.correlation_key.as_ref())
                .map(ToString::to_string),
            reply_to: extras
                .and_then(|e| e.reply_to.as_ref())
                .map(|c| c.as_str().to_string()),
            diffracting: wave.flags & DIFFRACTS != 0,
            reflect_on_failure: wave.flags & REFLECTS != 0,
            reflection: extras
                .and_then(|e| e.reflection.as_deref())
                .map(|r| (r.reason.clone(), r.channel.as_str().to_string())),
            trace: extras.and_then(|e| e.trace),
            payload: wave.payload.clone(),
        }
    }

    /// A wave on `channel` with these fields, checked exactly as [`decode`]
    /// checks them.
    pub fn into_wave(self, channel: Channel) -> Result<Wave, WireError> {
        let decay = (self.decay_per_s.to_bits() != 0 || self.amplified_at_ns != 0)
            .then_some((self.decay_per_s, self.amplified_at_ns));
        if self.source.as_deref() == Some("") {
            return Err(invalid("source name is empty".to_string()));
        }
        let mut flags = 0;
        if self.diffracting {
            flags |= FLAG_DIFFRACT;
        }
        if self.reflect_on_failure {
            flags |= FLAG_REFLECT;
        }
        Raw {
            id: self.id,
            emitted_at_ns: self.emitted_at_ns,
            origin: self.origin,
            amplitude: self.amplitude,
            source_amplitude: self.source_amplitude,
            phase: self.phase,
            hops: self.hops,
            flags,
            source: self.source.as_deref().map_or(&[][..], str::as_bytes),
            decay,
            key: self.correlation_key.as_deref().map(str::as_bytes),
            reply_to: self.reply_to.as_deref().map(str::as_bytes),
            reflection: self.reflection.as_ref().map(|(reason, channel)| {
                (
                    reason.code(),
                    reason.message().unwrap_or("").as_bytes(),
                    channel.as_bytes(),
                )
            }),
            trace: None,
        }
        .build(channel, self.payload, None)
        .map(|mut wave| {
            wave.set_trace_context(self.trace);
            wave
        })
    }

    /// Whether every field equals `other`'s, floats compared bit for bit.
    pub fn same_as(&self, other: &Parts) -> bool {
        self.id == other.id
            && self.emitted_at_ns == other.emitted_at_ns
            && self.origin == other.origin
            && self.amplitude.to_bits() == other.amplitude.to_bits()
            && self.source_amplitude.to_bits() == other.source_amplitude.to_bits()
            && self.phase.to_bits() == other.phase.to_bits()
            && self.hops == other.hops
            && self.source == other.source
            && self.decay_per_s.to_bits() == other.decay_per_s.to_bits()
            && self.amplified_at_ns == other.amplified_at_ns
            && self.correlation_key == other.correlation_key
            && self.reply_to == other.reply_to
            && self.diffracting == other.diffracting
            && self.reflect_on_failure == other.reflect_on_failure
            && self.reflection == other.reflection
            && self.trace == other.trace
            && self.payload == other.payload
    }
}
