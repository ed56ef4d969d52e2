//! Configuration of an aether.

mod clock;
mod durability;
mod hopping;
mod lan;
mod nats;
mod physics;
mod report;
mod security;
mod state;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use clock::ClockConfig;
pub use durability::{DurabilityConfig, DurableStorage};
pub use hopping::{HOP_INTERVAL_MS_RANGE, HoppingConfig, MIN_HOPPING_SECRET_BYTES};
pub use lan::LanConfig;
pub use nats::{NatsAuth, NatsBatch, NatsConfig, NatsTls, redact_url};
pub use report::ReportConfig;
pub use security::{
    AclRule, DurableConsumer, EncryptionRule, HoppingBase, MIN_SIGNING_KEY_BYTES, NatsPermissions,
    SecurityConfig,
};

pub use physics::PhysicsConfig;
pub use state::{
    ENTRY_BYTES, KeeperConfig, MAX_PRESENCE_BYTES, MAX_PRESENCE_HELD_BYTES,
    MAX_PRESENCE_SLOT_BYTES, MAX_PRESENCE_SLOTS, MOST_KEY_BYTES, MOST_VALUE_BYTES,
    PRESENCE_SLOT_COST, StateConfig,
};

use crate::attenuation::DEFAULT_ATTENUATION_FACTOR;

/// Settings of an [`Aether`](crate::Aether). Every field has a default; a
/// value out of range is refused when the aether starts, naming the field.
///
/// ```
/// use aether_core::{Aether, AetherConfig};
///
/// let config = AetherConfig {
///     attenuation_factor: 0.95, // gentle attenuation
///     max_propagation: 10,      // at most 10 hops
///     ..Default::default()
/// };
/// let aether = Aether::new(config)?;
/// assert_eq!(aether.config().max_propagation, 10);
///
/// let bad = AetherConfig { min_amplitude: 2.0, ..Default::default() };
/// let err = Aether::new(bad).unwrap_err();
/// assert_eq!(err.key(), "min_amplitude");
/// # Ok::<(), aether_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AetherConfig {
    /// Capacity of each vibrator's receive queue (waves). When full, the
    /// weakest wave is shed. Default 1000.
    pub channel_buffer_size: usize,
    /// Most hops a wave may make; past it, it is dropped and counted (loop
    /// protection). Default 10, at most 255.
    pub max_propagation: u32,
    /// Amplitude kept per hop, in `(0, 1]`. Default 0.95.
    pub attenuation_factor: f64,
    /// Waves weaker than this are dead: not delivered, counted as expired.
    /// In `[0, 1)`. Default 0.01.
    pub min_amplitude: f64,
    /// Noise floor of new vibrators, in `[0, 1]`. Default 0 (hear everything
    /// that is alive).
    pub default_noise_floor: f64,
    /// Timeout of requests made without one, in milliseconds. Default 5000.
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// How [`Aether::connect`](crate::Aether::connect) reaches NATS (not
    /// used by the embedded medium).
    pub nats: NatsConfig,
    /// How vibrators hop (the secret and the slot length), on every medium.
    pub hopping: HoppingConfig,
    /// The physics engine on the bus (interference, resonance, its budget)
    /// and diffraction, on every medium.
    pub physics: PhysicsConfig,
    /// Source authentication (signed waves) and channel access rules, on
    /// every medium; off by default.
    pub security: SecurityConfig,
    /// Durable channels over NATS (JetStream) and the emitter's outbox on
    /// disk; off by default (`[aether.durability]`).
    pub durability: DurabilityConfig,
    /// Instance reports on the bus (`[aether.report]`).
    pub report: ReportConfig,
    /// Replicated maps opened on the aether (`[aether.state]`).
    pub state: StateConfig,
    /// The bus on the LAN a program joins when it discovers its server
    /// (`[aether.lan]`).
    pub lan: LanConfig,
    /// The bus's time: whether this program is a source of it, and which
    /// source it follows (`[aether.clock]`).
    pub clock: ClockConfig,
}

impl Default for AetherConfig {
    fn default() -> Self {
        Self {
            channel_buffer_size: 1000,
            max_propagation: 10,
            attenuation_factor: DEFAULT_ATTENUATION_FACTOR,
            min_amplitude: 0.01,
            default_noise_floor: 0.0,
            request_timeout: Duration::from_millis(5000),
            nats: NatsConfig::default(),
            hopping: HoppingConfig::default(),
            physics: PhysicsConfig::default(),
            security: SecurityConfig::default(),
            durability: DurabilityConfig::default(),
            report: ReportConfig::default(),
            state: StateConfig::default(),
            lan: LanConfig::default(),
            clock: ClockConfig::default(),
        }
    }
}

impl AetherConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=10_000_000).contains(&self.channel_buffer_size),
            "channel_buffer_size",
            self.channel_buffer_size.to_string(),
            "must be between 1 and 10000000",
        )?;
        check(
            self.max_propagation <= 255,
            "max_propagation",
            self.max_propagation.to_string(),
            "must be at most 255",
        )?;
        check(
            self.attenuation_factor > 0.0 && self.attenuation_factor <= 1.0,
            "attenuation_factor",
            self.attenuation_factor.to_string(),
            "must be in (0, 1]",
        )?;
        check(
            (0.0..1.0).contains(&self.min_amplitude),
            "min_amplitude",
            self.min_amplitude.to_string(),
            "must be in [0, 1)",
        )?;
        check(
            (0.0..=1.0).contains(&self.default_noise_floor),
            "default_noise_floor",
            self.default_noise_floor.to_string(),
            "must be in [0, 1]",
        )?;
        check(
            as_ms(self.request_timeout) > 0,
            "request_timeout_ms",
            as_ms(self.request_timeout).to_string(),
            "must be at least 1",
        )?;
        self.nats.validate()?;
        self.report.validate()?;
        self.hopping.validate()?;
        self.security.validate()?;
        self.durability.validate()?;
        self.state.validate()?;
        self.lan.validate()?;
        self.clock.validate()?;
        self.physics.validate()
    }
}

/// A duration in nanoseconds, as the physics engine counts them.
pub(crate) fn as_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration as the settings write it, in whole milliseconds.
pub(crate) fn as_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Durations in the settings, one convention for all: a `Duration` field,
/// written under its `_ms` key as milliseconds (`ack_wait_ms = 5000`) or as
/// text with its unit (`ack_wait_ms = "5s"`; `ms`, `s`, `m`, `h`).
pub(crate) mod millis {
    use std::{fmt, time::Duration};

    use serde::{Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(super::as_ms(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Millis)
    }

    /// A duration's text: whole milliseconds (`"250"`), or a number with its
    /// unit (`"250ms"`, `"1.5s"`, `"2m"`, `"1h"`).
    pub(crate) fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        if let Ok(ms) = text.parse::<u64>() {
            return Some(Duration::from_millis(ms));
        }
        let at = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, unit) = text.split_at(at);
        let ms_per: u64 = match unit.trim() {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(ms_per).map(Duration::from_millis);
        }
        let number: f64 = number.parse().ok()?;
        Duration::try_from_secs_f64(number * ms_per as f64 / 1000.0).ok()
    }

    struct Millis;

    impl de::Visitor<'_> for Millis {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "milliseconds, or a duration with its unit (\"250ms\", \"5s\", \"2m\", \"1h\")",
            )
        }

        fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(ms))
        }

        fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
            u64::try_from(ms)
                .map(Duration::from_millis)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(ms), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
        }
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::*;

        use super::*;

        #[test]
        fn durations_are_read_in_milliseconds_or_with_their_unit() {
            for (text, ms) in [
                ("250", 250),
                ("250ms", 250),
                ("5s", 5000),
                ("1.5s", 1500),
                ("2m", 120_000),
                ("1h", 3_600_000),
                (" 30 s ", 30_000),
            ] {
                assert_eq!(parse(text), Some(Duration::from_millis(ms)), "{text}");
            }
            for bad in ["", "s", "5x", "-5s", "5 seconds", "1e3ms", "NaNs", "ms5"] {
                assert_eq!(parse(bad), None, "{bad}");
            }
        }

        proptest! {
            /// Any milliseconds survive their text, with or without a unit.
            #[test]
            fn milliseconds_round_trip(ms in 0u64..u64::MAX / 2) {
                prop_assert_eq!(parse(&ms.to_string()), Some(Duration::from_millis(ms)));
                prop_assert_eq!(parse(&format!("{ms}ms")), Some(Duration::from_millis(ms)));
                prop_assert_eq!(parse(&format!("{}s", ms / 1000)), Some(Duration::from_secs(ms / 1000)));
            }

            /// No text makes it panic.
            #[test]
            fn any_text_is_handled(text in ".{0,20}") {
                let _ = parse(&text);
            }
        }
    }
}

/// `Ok` if `ok`, else the error naming `key`, its `value` and the `rule`.
pub(crate) fn check(
    ok: bool,
    key: &'static str,
    value: String,
    rule: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError { key, value, rule })
    }
}

/// A configuration value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key} = {value} {rule}")]
pub struct ConfigError {
    key: &'static str,
    value: String,
    rule: &'static str,
}

impl ConfigError {
    /// The error naming `key`, its `value` and the `rule` it breaks (for the
    /// settings of other modules, such as `physics`).
    pub(crate) fn new(key: &'static str, value: String, rule: &'static str) -> Self {
        Self { key, value, rule }
    }

    /// The name of the bad field.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The bad value, as text.
    pub fn value(&self) -> &str {
        &self.value
    }
}
