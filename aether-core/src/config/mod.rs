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
pub use state::{ENTRY_BYTES, KeeperConfig, MOST_KEY_BYTES, MOST_VALUE_BYTES, StateConfig};

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
    pub request_timeout_ms: u64,
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
            request_timeout_ms: 5000,
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
            self.request_timeout_ms > 0,
            "request_timeout_ms",
            self.request_timeout_ms.to_string(),
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

    /// [`AetherConfig::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
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
